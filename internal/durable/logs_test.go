package durable

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/restate-grpc/restate-grpc/internal/testlog"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// TestFailedCallLogs: a failed durable call logs one INFO line with its route, code and
// invocation; a successful one logs nothing at info.
func TestFailedCallLogs(t *testing.T) {
	ingress := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if !bytes.Contains(body, []byte("missing")) {
			echoIngress(w, r, body)
			return
		}
		w.Header().Set("X-Restate-Id", "inv_failed")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"code":404,"message":"no such order","source":"invocation"}`)
	})
	var buf testlog.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{} // not reproducible
		}
		return a
	}}))
	opts := outboundOptions(t, routesYAML, ingress, nil)
	opts.Logger = log
	o := serve(t, opts)
	for _, tc := range []struct {
		text, want string
	}{
		{"found", ""},
		{"missing", `level=INFO msg="durable call failed" method=/rgtest.v1.Echo/Call route=rgtest.v1.Echo/* invocation=inv_failed code=NotFound message="no such order"`},
	} {
		o.echo.Call(context.Background(), &testpb.Req{Text: tc.text})
		if got := strings.TrimSpace(buf.Take()); got != tc.want {
			t.Errorf("call of %q logged:\n%s\nwant:\n%s", tc.text, got, tc.want)
		}
	}
}
