package inbound

import (
	"context"
	"log/slog"
	"strings"

	"google.golang.org/grpc/status"
)

// logFailed logs a call the app refused for good, as the outbound side logs a failed durable
// call: one INFO line with the gRPC method, the route (the Restate service and handler it
// came as), the invocation, the app's code and message. Retryable answers log nothing here:
// Restate retries them, and an app that is down is the app probe's one WARN.
func (f forwarder) logFailed(invocation, method string, st *status.Status) {
	handler := method[strings.LastIndexByte(method, '/')+1:]
	f.log.Info("inbound call failed", "method", method, "route", f.s.restateName+"/"+handler,
		"invocation", invocation, "code", st.Code().String(), "message", st.Message())
}

// sdkDebug are sdk-go's per-invocation log messages that the sidecar logs at debug. sdk-go
// returns a retryable failure to Restate by panicking, and logs every attempt of an app that
// is down as an ERROR "Invocation panicked"; it logs each success at INFO, and a call the app
// refused for good at WARN. None says more than the sidecar's own lines (the app's state,
// each failed call, logFailed), and at those levels they would bury them.
var sdkDebug = map[string]bool{
	"Handling invocation":                             true,
	"Invocation completed successfully":               true,
	"Invocation returned a non-terminal failure":      true,
	"Invocation panicked, returning error to Restate": true,
	"Suspending invocation":                           true,
	"Invocation returned a terminal failure":          true,
}

// sdkHandler passes sdk-go's records on to h, those of sdkDebug at debug.
type sdkHandler struct{ h slog.Handler }

func (s sdkHandler) Enabled(ctx context.Context, l slog.Level) bool { return s.h.Enabled(ctx, l) }

func (s sdkHandler) Handle(ctx context.Context, r slog.Record) error {
	if sdkDebug[r.Message] && r.Level > slog.LevelDebug {
		if !s.h.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return s.h.Handle(ctx, r)
}

func (s sdkHandler) WithAttrs(as []slog.Attr) slog.Handler { return sdkHandler{s.h.WithAttrs(as)} }
func (s sdkHandler) WithGroup(name string) slog.Handler    { return sdkHandler{s.h.WithGroup(name)} }
