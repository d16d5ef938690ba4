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
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
	"github.com/restate-grpc/restate-grpc/internal/sidecar"
	"github.com/restate-grpc/restate-grpc/internal/testenv"
	"github.com/restate-grpc/restate-grpc/internal/testservice"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// The version and commit the e2e build of the sidecar is stamped with.
const stampVersion, stampCommit = "v0.0.0-e2e", "0123456789abcdef0123456789abcdef01234567"

// env is what TestMain starts once for the package.
var env envT

type envT struct {
	restate *testenv.Restate
	app     *testservice.App
	appAddr string
	inbound *sidecar.Sidecar
	// out is the outbound sidecar of the durable routes; conn dials it.
	out  *sidecar.Sidecar
	conn *grpc.ClientConn
	// strict (connStrict) sends by default, reads descriptors from a file and rejects
	// unmatched calls; plain (connPlain) has no descriptors and passes most calls through.
	strict, plain         *sidecar.Sidecar
	connStrict, connPlain *grpc.ClientConn
	// traces counts the OTLP exports Restate made.
	traces *traceSink
	dir    string
	// bin holds the sidecar and testapp binaries, for the tests that run them as processes.
	bin string
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
	testenv.StopSharedKube()
	cancel()
	for _, s := range []*sidecar.Sidecar{env.out, env.strict, env.plain, env.inbound} {
		s.Wait()
	}
	env.restate.Stop()
	return code
}

func setup(ctx context.Context, dir string) error {
	env.bin = filepath.Join(dir, "bin")
	// Stamped as make build stamps it, so TestVersion sees the names -X sets are right.
	build := exec.Command("go", "build", "-ldflags", "-X main.version="+stampVersion+" -X main.commit="+stampCommit,
		"-o", env.bin+"/", "./cmd/sidecar", "./internal/testservice/testapp")
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building the binaries: %v\n%s", err, out)
	}
	env.traces = newTraceSink()
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
	descFile := filepath.Join(dir, "test.pb")
	if err := writeDescriptorSet(descFile); err != nil {
		return err
	}
	if env.strict, err = startSidecar(ctx, strictConfig(descFile)); err != nil {
		return err
	}
	if env.plain, err = startSidecar(ctx, plainConfig()); err != nil {
		return err
	}
	env.conn, env.connStrict, env.connPlain = dial(env.out), dial(env.strict), dial(env.plain)
	// The first invocation of a newly registered service takes Restate most of a second; make
	// it here, so that tests timing their calls measure the steady state.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, _, err = invoke(wctx, env.conn, "/rgtest.v1.Echo/Call", &testpb.Req{Text: "warm-up"})
	return err
}

func dial(s *sidecar.Sidecar) *grpc.ClientConn {
	c, err := grpc.NewClient(s.OutboundAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err) // NewClient fails only on a malformed target
	}
	return c
}

// writeDescriptorSet writes the test proto as a FileDescriptorSet, as protoc would.
func writeDescriptorSet(path string) error {
	set := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{protodesc.ToFileDescriptorProto(testpb.File_internal_testservice_testpb_test_proto)}}
	b, err := proto.Marshal(set)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
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
      attemptTimeout: 7s
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
  admin: %s
  upstreams: {rgtest.v1.Echo: %[3]s, grpc.testing.TestService: %[3]s}
  descriptors: {reflection: %[3]s}
  routes:
    - match: rgtest.v1.Echo/Call
    - match: rgtest.v1.Counter/*
      target: object
      key: metadata:counter-id
    - match: rgtest.v1.Flow/*
      target: workflow
      key: field:key
    - match: rgtest.v1.Native/*
    - {match: grpc.testing.TestService/EmptyCall}
    - {match: grpc.testing.TestService/UnaryCall}
    - {match: grpc.testing.TestService/UnimplementedCall}
`, env.restate.Ingress, env.restate.Admin, env.appAddr)
}

func strictConfig(descFile string) string {
	return fmt.Sprintf(`
outbound:
  listen: 127.0.0.1:0
  ingress: %s
  unmatched: reject
  descriptors: {file: %s}
  routes:
    - match: rgtest.v1.Echo/Call
      mode: send
      delay: 1s
    - match: rgtest.v1.Counter/*
      target: object
      key: field:nested.id
    - match: rgtest.v1.Echo/*
    - match: rgtest.v1.Missing/*
    - match: restatedemo.v1.*
`, env.restate.Ingress, descFile)
}

func plainConfig() string {
	return fmt.Sprintf(`
outbound:
  listen: 127.0.0.1:0
  ingress: %s
  maxMessageBytes: 1048576
  upstreams: {rgtest.v1.Echo: %[2]s, grpc.testing.TestService: %[2]s}
  routes:
    - match: rgtest.v1.Echo/ClientStream
    - match: rgtest.v1.Flow/*
      target: workflow
      key: field:key
`, env.restate.Ingress, env.appAddr)
}

// startInbound starts an inbound sidecar on a port of its own (the %d placeholders of cfg:
// listen port, then the same port in the registered URI) and waits until it is registered.
func startInbound(ctx context.Context, cfg string) (*sidecar.Sidecar, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	c, err := config.Parse([]byte(fmt.Sprintf(cfg, port, port)))
	if err != nil {
		l.Close()
		return nil, err
	}
	s, err := sidecar.Start(ctx, sidecar.Options{Config: c, Listeners: sidecar.Listeners{Inbound: l}, Health: "127.0.0.1:0", Logger: testLogger()})
	if err != nil {
		l.Close()
		return nil, err
	}
	// Registered, not ready: readiness also needs the app answering, and some tests start the
	// app after its sidecar.
	registered := func() bool {
		ok := map[string]bool{}
		for _, c := range s.Checks() {
			ok[c.Name] = c.OK
		}
		if r, has := ok[sidecar.CheckRegistered]; has {
			return r
		}
		return ok[sidecar.CheckInbound] // no register section: serving is all there is
	}
	deadline := time.Now().Add(30 * time.Second)
	for !registered() {
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

// testLogger writes the sidecars' logs to $TMPDIR/rg-e2e-sidecars.log (kept after the run);
// RG_E2E_DEBUG=1 sends them, every call included, to stderr instead.
func testLogger() *slog.Logger {
	if os.Getenv("RG_E2E_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	logOnce.Do(func() {
		f, err := os.Create(filepath.Join(os.TempDir(), "rg-e2e-sidecars.log"))
		if err != nil {
			logFile = io.Discard
			return
		}
		logFile = f
	})
	return slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

var (
	logOnce sync.Once
	logFile io.Writer
)

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

// invoke calls method on conn with req and the metadata pairs md, and returns the response and
// the header metadata.
func invoke(ctx context.Context, conn *grpc.ClientConn, method string, req *testpb.Req, md ...string) (*testpb.Resp, metadata.MD, error) {
	var hdr metadata.MD
	resp := &testpb.Resp{}
	ctx = metadata.AppendToOutgoingContext(ctx, md...)
	err := conn.Invoke(ctx, method, req, resp, grpc.Header(&hdr))
	return resp, hdr, err
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ctxWith(ctx context.Context, md []string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, md...)
}

func (e *envT) adminQuery(t *testing.T, sql string, rows any) {
	t.Helper()
	a, err := restatehttp.NewAdmin(e.restate.Admin, restatehttp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Query(testCtx(t), sql, rows); err != nil {
		t.Fatal(err)
	}
}
