package inbound

import (
	"context"
	"log/slog"
)

// sdkDebug are sdk-go's per-invocation log messages that the sidecar logs at debug. sdk-go
// returns a retryable failure to Restate by panicking, and logs every attempt of an app that
// is down as an ERROR "Invocation panicked"; it logs each success at INFO. Neither says more
// than the sidecar's own lines (the app's state, each failed call), and at those levels they
// would bury them.
var sdkDebug = map[string]bool{
	"Handling invocation":                             true,
	"Invocation completed successfully":               true,
	"Invocation returned a non-terminal failure":      true,
	"Invocation panicked, returning error to Restate": true,
	"Suspending invocation":                           true,
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
