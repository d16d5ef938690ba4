package durable

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
	"github.com/restate-grpc/restate-grpc/internal/testservice"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// The durable path's unit tests: the real outbound server (the relay in front of the local
// grpc.Server and Handle) on a loopback listener, called by a real grpc-go client, with
// httptest servers in place of Restate's ingress and admin API.

// seen is one request a fake Restate server received.
type seen struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

// fake is a Restate ingress or admin API: it records every request and answers with answer.
type fake struct {
	srv *httptest.Server

	mu     sync.Mutex
	reqs   []seen
	answer func(w http.ResponseWriter, r *http.Request, body []byte)
}

func newFake(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, body []byte)) *fake {
	f := &fake{answer: answer}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Clone(), body})
		answer := f.answer
		f.mu.Unlock()
		answer(w, r, body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.reqs...)
}

func (f *fake) setAnswer(a func(w http.ResponseWriter, r *http.Request, body []byte)) {
	f.mu.Lock()
	f.answer = a
	f.mu.Unlock()
}

// echoIngress answers a call as the test app would: "echo <text>" with invocation id inv_test,
// a send as Accepted, an attach with the attached text.
func echoIngress(w http.ResponseWriter, r *http.Request, body []byte) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/send"):
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Restate-Id", "inv_sent")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"invocationId":"inv_sent","status":"Accepted"}`)
	case r.URL.Path == "/restate/lookup":
		io.WriteString(w, `{"invocationId":"inv_looked_up"}`)
	case strings.HasPrefix(r.URL.Path, "/restate/"):
		b, _ := proto.Marshal(&testpb.Resp{Text: "attached"})
		w.Header().Set("X-Restate-Id", "inv_attached")
		w.Write(b)
	default:
		var req testpb.Req
		if err := proto.Unmarshal(body, &req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"code":400,"message":"input validation error: not protobuf","source":"ingress"}`)
			return
		}
		b, _ := proto.Marshal(&testpb.Resp{Text: "echo " + req.Text})
		w.Header().Set("X-Restate-Id", "inv_test")
		w.Header().Set("Content-Type", "application/proto")
		w.Write(b)
	}
}

// routesYAML are the routes of most tests: Echo a service, Counter an object keyed by metadata
// k, Flow a workflow keyed by metadata k, Cancel an object whose callers' cancel reaches Restate.
const routesYAML = `
  routes:
    - {match: rgtest.v1.Echo/*}
    - {match: rgtest.v1.Counter/*, target: object, key: "metadata:k", allowMetadata: [cookie, authorization]}
    - {match: rgtest.v1.Flow/*, target: workflow, key: "metadata:k"}
`

// outbound is a running outbound server and a client connection to it.
type outbound struct {
	conn    *grpc.ClientConn
	handler *Handler
	echo    testpb.EchoClient
	counter testpb.CounterClient
	flow    testpb.FlowClient
}

// startOutbound parses the outbound config yaml (its ingress and admin set to the fakes; admin
// may be nil) and serves it on a loopback listener until the test ends.
func startOutbound(t *testing.T, yaml string, ingress, admin *fake, access ...restatehttp.Options) *outbound {
	t.Helper()
	return serve(t, outboundOptions(t, yaml, ingress, admin, access...))
}

// outboundOptions are startOutbound's, for a test that changes some (its logger, its tracing)
// before serve.
func outboundOptions(t *testing.T, yaml string, ingress, admin *fake, access ...restatehttp.Options) Options {
	t.Helper()
	text := "outbound:\n  ingress: " + ingress.srv.URL + "\n"
	if admin != nil {
		text += "  admin: " + admin.srv.URL + "\n"
	}
	c, err := config.Parse([]byte(text + yaml))
	if err != nil {
		t.Fatal(err)
	}
	var ao restatehttp.Options
	if len(access) > 0 {
		ao = access[0]
	}
	cl, err := restatehttp.NewClient(ingress.srv.URL, ao)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Config: c.Outbound, Ingress: cl, Logger: slog.New(slog.DiscardHandler)}
	if admin != nil {
		a, err := restatehttp.NewAdmin(admin.srv.URL, ao)
		if err != nil {
			t.Fatal(err)
		}
		o.Admin = a
	}
	return o
}

// passthroughApp starts the test app and an outbound config that relays its service to it,
// for the tests of passthrough streams; addr is the app's address.
func passthroughApp(t *testing.T) (app *testservice.App, c *config.Outbound, addr string) {
	t.Helper()
	app = testservice.NewApp()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := app.Serve(l)
	t.Cleanup(srv.Stop)
	cfg, err := config.Parse([]byte("outbound:\n  upstreams: {rgtest.v1.Echo: " + l.Addr().String() + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return app, cfg.Outbound, l.Addr().String()
}

func serve(t *testing.T, o Options) *outbound {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.Self = l.Addr().String()
	h, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(h, nil, o.Logger)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Shutdown(context.Background())
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return &outbound{conn: conn, handler: h, echo: testpb.NewEchoClient(conn), counter: testpb.NewCounterClient(conn), flow: testpb.NewFlowClient(conn)}
}

// wantStatus checks that a call ended with code and a message containing msg and, when it was
// refused, that the ingress was never asked; it reports whether it was refused.
func wantStatus(t *testing.T, err error, reqs []seen, code codes.Code, msg string) (refused bool) {
	t.Helper()
	if st := status.Convert(err); st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("got %v %q, want %v with %q", st.Code(), st.Message(), code, msg)
	}
	if code == codes.OK {
		return false
	}
	if len(reqs) != 0 {
		t.Errorf("a refused call reached the ingress: %+v", reqs)
	}
	return true
}
