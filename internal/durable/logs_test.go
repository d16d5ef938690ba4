package durable

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
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
	c, err := config.Parse([]byte("outbound:\n  ingress: " + ingress.srv.URL + "\n" + routesYAML))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := restatehttp.NewClient(ingress.srv.URL, restatehttp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{} // not reproducible
		}
		return a
	}}))
	o := serve(t, Options{Config: c.Outbound, Ingress: cl, Logger: log})
	for _, tc := range []struct {
		text, want string
	}{
		{"found", ""},
		{"missing", `level=INFO msg="durable call failed" method=/rgtest.v1.Echo/Call route=rgtest.v1.Echo/* invocation=inv_failed code=NotFound message="no such order"`},
	} {
		o.echo.Call(context.Background(), &testpb.Req{Text: tc.text})
		if got := strings.TrimSpace(buf.take()); got != tc.want {
			t.Errorf("call of %q logged:\n%s\nwant:\n%s", tc.text, got, tc.want)
		}
	}
}

// syncBuffer is a log's buffer, written by the server's goroutines and read by the test's
// (which the race detector cannot see ordered by the call's answer).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// take returns what was written and empties the buffer.
func (b *syncBuffer) take() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.buf.Reset()
	return b.buf.String()
}
