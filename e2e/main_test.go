package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/sidecar"
	"github.com/restate-grpc/restate-grpc/internal/testenv"
	"github.com/restate-grpc/restate-grpc/internal/testservice"
)

// env is what TestMain starts once for the package.
var env struct {
	restate *testenv.Restate
	app     *testservice.App
	appAddr string
	inbound *sidecar.Sidecar
	// out is the outbound sidecar of the durable routes; conn dials it.
	out  *sidecar.Sidecar
	conn *grpc.ClientConn
	// traces counts the OTLP exports Restate made.
	traces *traceSink
	dir    string
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "rg-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	env.dir = dir
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := setup(ctx, dir); err != nil {
		fmt.Fprintf(os.Stderr, "e2e setup: %v\n", err)
		if env.restate != nil {
			env.restate.Stop()
		}
		return 1
	}
	code := m.Run()
	cancel()
	env.out.Wait()
	env.inbound.Wait()
	env.restate.Stop()
	return code
}

func setup(ctx context.Context, dir string) error {
	env.traces = newTraceSink()
	var err error
	env.restate, err = testenv.StartRestate(dir, testenv.RestateOptions{Identity: true, TracingEndpoint: "otlp+" + env.traces.URL + "/v1/traces"})
	if err != nil {
		return err
	}
	env.app = testservice.NewApp()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	env.appAddr = l.Addr().String()
	env.app.Serve(l)

	env.inbound, err = startInbound(ctx, inboundConfig(env.appAddr, env.restate.IdentityKey))
	if err != nil {
		return err
	}
	env.out, err = startSidecar(ctx, outboundConfig())
	if err != nil {
		return err
	}
	env.conn, err = grpc.NewClient(env.out.OutboundAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	return err
}

// inboundConfig exposes the test app: Echo as a service, Counter as an object, Flow as a
// workflow, and grpc-go's interop TestService, methods from the app's reflection.
func inboundConfig(app, identityKey string) string {
	return fmt.Sprintf(`
inbound:
  app: %s
  listen: 127.0.0.1:%%d
  identityKeys: [%s]
  register: {admin: %s, uri: "http://127.0.0.1:%%d"}
  services:
    - name: rgtest.v1.Echo
    - name: rgtest.v1.Counter
      kind: object
      handlers: {Add: exclusive, Get: shared}
    - name: rgtest.v1.Flow
      kind: workflow
    - name: grpc.testing.TestService
`, app, identityKey, env.restate.Admin)
}

func outboundConfig() string {
	return fmt.Sprintf(`
outbound:
  listen: 127.0.0.1:0
  ingress: %s
  upstreams: {rgtest.v1.Echo: %[2]s, grpc.testing.TestService: %[2]s}
  descriptors: {reflection: %[2]s}
  routes:
    - match: rgtest.v1.Echo/Call
    - match: rgtest.v1.Counter/*
      target: object
      key: metadata:counter-id
    - match: rgtest.v1.Flow/*
      target: workflow
      key: field:key
    - {match: grpc.testing.TestService/EmptyCall}
    - {match: grpc.testing.TestService/UnaryCall}
    - {match: grpc.testing.TestService/UnimplementedCall}
`, env.restate.Ingress, env.appAddr)
}

// startInbound starts an inbound sidecar on a free port (the %d placeholders of cfg: listen
// port, then the same port in the registered URI) and waits until it is registered.
func startInbound(ctx context.Context, cfg string) (*sidecar.Sidecar, error) {
	port, err := testenv.FreePort()
	if err != nil {
		return nil, err
	}
	s, err := startSidecar(ctx, fmt.Sprintf(cfg, port, port))
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for !s.Ready() {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("inbound sidecar not registered after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, nil
}

func startSidecar(ctx context.Context, yaml string) (*sidecar.Sidecar, error) {
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		return nil, err
	}
	return sidecar.Start(ctx, sidecar.Options{Config: cfg, Logger: testLogger()})
}

// testLogger logs warnings and errors; RG_E2E_DEBUG=1 shows every call.
func testLogger() *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("RG_E2E_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// traceSink is an OTLP/HTTP receiver that keeps the raw export requests.
type traceSink struct {
	*httptest.Server
	mu   sync.Mutex
	reqs [][]byte
}

func newTraceSink() *traceSink {
	ts := &traceSink{}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ts.mu.Lock()
		ts.reqs = append(ts.reqs, b)
		ts.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	return ts
}

func (ts *traceSink) exports() [][]byte {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([][]byte(nil), ts.reqs...)
}

// uniq returns a name unique to the test, for keys and ids.
func uniq(t *testing.T, s string) string {
	return strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()) + "-" + s + "-" + fmt.Sprint(time.Now().UnixNano())
}
