package inbound

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// TestSDKLogLevels: sdk-go's lines of each attempt go to debug, the rest at their own level,
// so an app that is down and retried logs no ERROR, and a failed call logs the sidecar's line
// (logFailed) only.
func TestSDKLogLevels(t *testing.T) {
	records := []struct {
		level slog.Level
		msg   string
	}{
		{slog.LevelInfo, "Handling invocation"},
		{slog.LevelWarn, "Invocation returned a non-terminal failure"},
		{slog.LevelError, "Invocation panicked, returning error to Restate"},
		{slog.LevelInfo, "Invocation completed successfully"},
		{slog.LevelInfo, "Suspending invocation"},
		{slog.LevelWarn, "Invocation returned a terminal failure"},
		{slog.LevelWarn, "Error when consuming output"},
	}
	for _, tc := range []struct {
		level slog.Level
		want  string
	}{
		{slog.LevelInfo, `
level=WARN msg="Error when consuming output" invocationID=inv_1`},
		{slog.LevelDebug, `
level=DEBUG msg="Handling invocation" invocationID=inv_1
level=DEBUG msg="Invocation returned a non-terminal failure" invocationID=inv_1
level=DEBUG msg="Invocation panicked, returning error to Restate" invocationID=inv_1
level=DEBUG msg="Invocation completed successfully" invocationID=inv_1
level=DEBUG msg="Suspending invocation" invocationID=inv_1
level=DEBUG msg="Invocation returned a terminal failure" invocationID=inv_1
level=WARN msg="Error when consuming output" invocationID=inv_1`},
	} {
		var buf bytes.Buffer
		h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // not reproducible
			}
			return a
		}})
		// sdk-go adds the invocation id to the handler it is given, as here.
		log := slog.New(sdkHandler{h}.WithAttrs([]slog.Attr{slog.String("invocationID", "inv_1")}))
		for _, r := range records {
			log.Log(context.Background(), r.level, r.msg)
		}
		if got, want := strings.TrimSpace(buf.String()), strings.TrimSpace(tc.want); got != want {
			t.Errorf("at level %s, got:\n%s\nwant:\n%s", tc.level, got, want)
		}
	}
}
