package durable

import (
	"context"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // callers that compress: decoded before the ingress, answers compressed alike

	"github.com/restate-grpc/restate-grpc/interceptors"
	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/intercept"
	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
	"github.com/restate-grpc/restate-grpc/proxy"
)

// ErrServerClosed is what Serve returns after Shutdown.
var ErrServerClosed = proxy.ErrServerClosed

// Server serves the outbound listener: the relay decides each stream (direct), and the
// streams it keeps go over an in-memory connection to a local grpc.Server, which runs the
// durable calls (Handle) and the sidecar's own services behind the interceptor chain.
type Server struct {
	relay *proxy.Server
	local *grpc.Server
	pipe  *proxy.Pipe
}

// NewServer returns the outbound server of h. register adds the sidecar's own services to the
// local gRPC server before it starts; those calls never pass through.
func NewServer(h *Handler, register func(grpc.ServiceRegistrar), log *slog.Logger) *Server {
	recoverU, recoverS := interceptors.Recovery(log)
	limitU, limitS := interceptors.InFlight(h.cfg.Limits.MaxDurableCalls, "durable calls")
	local := grpc.NewServer(
		grpc.ForceServerCodecV2(rawcodec.Codec),
		grpc.MaxRecvMsgSize(h.cfg.MaxMessageBytes),
		// Fixed windows turn off grpc-go's BDP estimation, whose PINGs on every burst of a
		// call only cost wake-ups on a connection that never leaves the process.
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(4<<20),
		grpc.UnknownServiceHandler(h.Handle),
		grpc.ChainUnaryInterceptor(recoverU, limitU),
		grpc.ChainStreamInterceptor(recoverS, limitS, interceptors.ProtoOnly()),
		h.metrics.ServerOption(),
	)
	if register != nil {
		register(local)
	}
	own := map[string]bool{}
	for name := range local.GetServiceInfo() {
		own[name] = true
	}
	pipe := proxy.NewPipe()
	return &Server{
		relay: &proxy.Server{Director: h.direct(own), Local: pipe.Dial, Dial: dialRaw, Limits: relayLimits(h.cfg.Limits), Logger: log,
			Destination: intercept.Destination, Observe: h.observe(), Refused: h.metrics.RefusedStream, Broke: h.metrics.PeerClosed},
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

func relayLimits(l config.Limits) proxy.Limits {
	return proxy.Limits{
		MaxConcurrentStreams: uint32(l.MaxConcurrentStreams),
		MaxHeaderListSize:    uint32(l.MaxHeaderListBytes),
		MaxResetsPerSecond:   l.MaxResetsPerSecond,
		PrefaceTimeout:       l.PrefaceTimeout.Std(),
		IdleTimeout:          l.IdleTimeout.Std(),
		UpstreamIdleTimeout:  l.UpstreamIdleTimeout.Std(),
		KeepaliveInterval:    l.KeepaliveInterval.Std(),
		KeepaliveTimeout:     l.KeepaliveTimeout.Std(),
	}
}
