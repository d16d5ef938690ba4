package proxy

import (
	"context"
	"log/slog"
	"net"

	"google.golang.org/grpc"

	"github.com/restate-grpc/restate-grpc/internal/grpcrelay"
)

// ErrServerClosed is what Serve returns after Shutdown.
var ErrServerClosed = grpcrelay.ErrServerClosed

// Server serves the outbound listener.
type Server struct {
	relay *grpcrelay.Server
	local *grpc.Server
	pipe  *grpcrelay.Pipe
}

// NewServer returns the outbound server of h. register adds the sidecar's own services to the
// local gRPC server before it starts; those calls never pass through.
func NewServer(h *Handler, register func(grpc.ServiceRegistrar), log *slog.Logger) *Server {
	local := grpc.NewServer()
	if register != nil {
		register(local)
	}
	own := map[string]bool{}
	for name := range local.GetServiceInfo() {
		own[name] = true
	}
	pipe := grpcrelay.NewPipe()
	return &Server{
		relay: &grpcrelay.Server{Director: h.direct(own), Local: pipe.Dial, Dial: dialRaw, Logger: log},
		local: local,
		pipe:  pipe,
	}
}

// Serve serves l until Shutdown, and returns ErrServerClosed after it.
func (s *Server) Serve(l net.Listener) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.local.Serve(s.pipe) // ends in Shutdown
	}()
	err := s.relay.Serve(l)
	if err != ErrServerClosed {
		s.local.Stop()
	}
	<-done
	return err
}

// Shutdown stops taking connections and lets the calls in flight finish, or end with ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.relay.Shutdown(ctx)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		s.local.GracefulStop()
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.local.Stop()
		<-stopped
	}
	s.pipe.Close()
	return err
}
