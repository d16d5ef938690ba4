package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/restate-grpc/restate-grpc/internal/testenv"
	"github.com/restate-grpc/restate-grpc/internal/testservice"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// The sidecar's uid and outbound port, as the pod's init step names them.
const (
	sidecarUID   = 1337
	outboundAddr = "127.0.0.1:15001"
	healthAddr   = "127.0.0.1:15021"
)

// Ports of the orders pod's servers: the gRPC app and the non-gRPC ones.
const (
	ordersPort      = 50051
	httpPort        = 8081
	tlsPort         = 8443
	serverFirstPort = 2525
	uploadPort      = 9000
)

// podRig is the pod network of the interception tests: an app pod per transparent mode, each
// with its outbound sidecar; orders, the callee (the test app in this process, its inbound
// sidecar, and plain TCP servers); and restate, a Restate server. No app is told of a sidecar.
type podRig struct {
	net     *testenv.PodNet
	orders  *testservice.App
	restate *testenv.Restate
	dir     string // binaries and configs, readable by the sidecar's uid
	certs   *x509.CertPool
}

// interceptMode is one transparent mode: how its app pod is set up, and how a connection of
// the app to orders:port is made in it.
type interceptMode struct {
	pod      string
	captures bool // iptables redirects the pod's connections, the sidecar's excepted
	proxyEnv bool // the pod's clients find the sidecar in a proxy variable
	setup    func(t *testing.T, r *podRig, pod *testenv.Pod)
	dial     func(ctx context.Context, r *podRig, pod *testenv.Pod, port int) (net.Conn, error)
}

// clientRun is one run of a client in a mode: its name among the subtests, its environment.
type clientRun struct {
	name string
	env  []string
}

// runs are the runs of client c in mode m: one, or in proxy-env mode one per proxy variable
// its library reads, that variable alone set.
func (m interceptMode) runs(c interceptClient) []clientRun {
	if !m.proxyEnv {
		return []clientRun{{name: c.lang}}
	}
	var out []clientRun
	for _, v := range c.proxyVars {
		out = append(out, clientRun{name: c.lang + "/" + v, env: []string{v + "=http://" + outboundAddr}})
	}
	return out
}

var interceptModes = []interceptMode{
	{
		// The pod's init step: every outbound TCP port captured (loopback is never), so any
		// connection of the sidecar's own that was captured would loop back to it.
		pod:      "app-iptables",
		captures: true,
		setup: func(t *testing.T, r *podRig, pod *testenv.Pod) {
			out, err := pod.Command(testCtx(t), 0, filepath.Join(r.dir, "sidecar"), "iptables",
				"--to-port", "15001", "--proxy-uid", fmt.Sprint(sidecarUID), "--exclude-ports", "9080,15021").CombinedOutput()
			if err != nil {
				t.Fatalf("sidecar iptables in %s: %v\n%s", pod.Name, err, out)
			}
		},
		// The test's own resolver reads the host's /etc/hosts, not the pod's: it dials orders
		// by address, as the app's resolver would have resolved it.
		dial: func(ctx context.Context, r *podRig, pod *testenv.Pod, port int) (net.Conn, error) {
			return pod.DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", r.net.Pod("orders").Addr, port))
		},
	},
	{
		pod:      "app-proxyenv",
		proxyEnv: true,
		setup:    func(*testing.T, *podRig, *testenv.Pod) {},
		dial: func(ctx context.Context, r *podRig, pod *testenv.Pod, port int) (net.Conn, error) {
			return connectTunnel(ctx, pod, fmt.Sprintf("orders:%d", port))
		},
	},
}

// interceptClient is an unmodified client (internal/testservice/client); ua is how its
// library names itself in user-agent, proxyVars the proxy variables it reads.
type interceptClient struct {
	lang, ua  string
	proxyVars []string
	argv      func(r *podRig) []string
	env       func(r *podRig) []string
}

var interceptClients = []interceptClient{
	{lang: "go", ua: "grpc-go/", proxyVars: []string{"https_proxy"},
		argv: func(r *podRig) []string { return []string{filepath.Join(r.dir, "client")} }},
	{lang: "python", ua: "grpc-python/", proxyVars: []string{"grpc_proxy", "https_proxy", "http_proxy"},
		argv: func(*podRig) []string { return []string{"/usr/bin/python3", clientSource("client.py")} }},
	{lang: "node", ua: "grpc-node-js/", proxyVars: []string{"grpc_proxy", "https_proxy", "http_proxy"},
		argv: func(*podRig) []string { return []string{"node", clientSource("client.js")} },
		env: func(*podRig) []string {
			return []string{"NODE_PATH=" + filepath.Join(repoRoot(), ".tools/node_modules")}
		}},
}

// TestInterception runs unmodified clients in grpc-go, Python and Node, which dial
// orders:50051 and know nothing of a sidecar, in both transparent modes: a call on a durable
// route is answered through Restate, an unmatched call and a streaming call reach orders
// itself, non-gRPC protocols reach their destinations intact, the sidecar's own connections
// are not captured, and without the sidecar the app's connections are refused at once.
func TestInterception(t *testing.T) {
	r := newPodRig(t)
	for _, m := range interceptModes {
		t.Run(m.pod, func(t *testing.T) {
			pod := r.net.Pod(m.pod)
			m.setup(t, r, pod)
			sidecar := r.startSidecar(t, pod, "outbound", fmt.Sprintf(`
outbound:
  listen: %s
  ingress: %s
  admin: %s
  routes:
    - match: rgtest.v1.Echo/Call
`, outboundAddr, r.restate.Ingress, r.restate.Admin))

			t.Run("grpc", func(t *testing.T) {
				for _, c := range interceptClients {
					for _, run := range m.runs(c) {
						t.Run(run.name, func(t *testing.T) { r.checkClient(t, pod, c, run.env) })
					}
				}
			})
			t.Run("not grpc", func(t *testing.T) { r.checkOpaque(t, m, pod) })
			if m.captures {
				t.Run("own connections", func(t *testing.T) { checkExempt(t, pod) })
			}
			t.Run("sidecar killed", func(t *testing.T) {
				sidecar.Kill()
				r.checkRefused(t, m, pod)
			})
		})
	}
}

// checkClient runs client c in the pod: a durable call, an unmatched unary call and a
// server-streaming call, and checks each answer and where it came from. The client makes the
// three on one channel, one connection: the durable answer shows the sidecar took it.
func (r *podRig) checkClient(t *testing.T, pod *testenv.Pod, c interceptClient, env []string) {
	text := uniq(t, "")
	req := func(s string) string { return reqHex(t, s) }
	lines, _ := r.runClient(t, pod, c, env,
		"unary:/rgtest.v1.Echo/Call:"+req(text+"-durable"),
		"unary:/rgtest.v1.Counter/Get:"+req(text+"-unmatched"),
		"stream:/rgtest.v1.Echo/ServerStream:"+req(text+"-stream"))
	if len(lines) != 3 {
		t.Fatalf("%s client printed %d lines, want 3: %q", c.lang, len(lines), lines)
	}

	t.Run("durable", func(t *testing.T) {
		id, resps := parseOK(t, lines[0])
		if !strings.HasPrefix(id, "inv_") {
			t.Fatalf("restate-invocation-id = %q, want an inv_ id (answered through Restate)", id)
		}
		resp := resps[0]
		if resp.GetText() != text+"-durable" || resp.GetInvocationId() != id {
			t.Errorf("answer text %q, invocation id %q; want %q, %q", resp.GetText(), resp.GetInvocationId(), text+"-durable", id)
		}
		calls := r.orders.CallsWithText(text + "-durable")
		if len(calls) == 0 {
			t.Fatal("orders executed no call with the durable call's text")
		}
		for _, call := range calls {
			if call.InvocationID != id {
				t.Errorf("orders executed it with invocation id %q, want %q (Restate's)", call.InvocationID, id)
			}
		}
	})

	t.Run("unmatched", func(t *testing.T) {
		id, resps := parseOK(t, lines[1])
		if id != "-" {
			t.Errorf("restate-invocation-id = %q, want none (passthrough)", id)
		}
		if got := resps[0].GetText(); got != text+"-unmatched" {
			t.Errorf("answer text %q, want %q", got, text+"-unmatched")
		}
		if ua := resps[0].GetMetadata()["user-agent"]; !strings.Contains(ua, c.ua) {
			t.Errorf("orders saw user-agent %q, want %s's (%s)", ua, c.lang, c.ua)
		}
		if got := resps[0].GetMetadata()[":authority"]; got != fmt.Sprintf("orders:%d", ordersPort) {
			t.Errorf("orders saw :authority %q, want the name the client dialed, orders:%d", got, ordersPort)
		}
		calls := r.orders.CallsWithText(text + "-unmatched")
		if len(calls) != 1 || calls[0].Method != "Counter/Get" || calls[0].InvocationID != "" {
			t.Errorf("orders executed %+v, want one Counter/Get without an invocation id (straight from the app)", calls)
		}
	})

	t.Run("stream", func(t *testing.T) {
		id, resps := parseOK(t, lines[2])
		if id != "-" {
			t.Errorf("restate-invocation-id = %q, want none (passthrough)", id)
		}
		var got []string
		for _, resp := range resps {
			got = append(got, resp.GetText())
		}
		want := []string{text + "-stream-0", text + "-stream-1", text + "-stream-2"}
		if !equal(got, want) {
			t.Errorf("stream answered %q, want %q", got, want)
		}
	})
}

// runClient runs client c in the pod as the app would (root, so iptables captures it) with env
// added to its environment, and returns its output lines and how long it ran.
func (r *podRig) runClient(t *testing.T, pod *testenv.Pod, c interceptClient, env []string, ops ...string) ([]string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	argv := append(c.argv(r), append([]string{fmt.Sprintf("orders:%d", ordersPort)}, ops...)...)
	cmd := pod.Command(ctx, 0, argv[0], argv[1:]...)
	cmd.Env = cleanEnv(env...)
	if c.env != nil {
		cmd.Env = append(cmd.Env, c.env(r)...)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	took := time.Since(start)
	if stderr.Len() > 0 {
		t.Logf("%s client's stderr:\n%s", c.lang, stderr.Bytes())
	}
	if err != nil {
		t.Fatalf("%s client: %v\n%s", c.lang, err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n"), took
}

// reqHex is a test request with text, as the clients take it: serialized, in hex.
func reqHex(t *testing.T, text string) string {
	t.Helper()
	b, err := proto.Marshal(&testpb.Req{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// parseOK reads a client's "OK ID HEX[,HEX...]" line into the invocation id and responses.
func parseOK(t *testing.T, line string) (string, []*testpb.Resp) {
	t.Helper()
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "OK" {
		t.Fatalf("client printed %q, want OK ID RESPONSES", line)
	}
	var resps []*testpb.Resp
	for _, h := range strings.Split(f[2], ",") {
		b, err := hex.DecodeString(h)
		resp := &testpb.Resp{}
		if err == nil {
			err = proto.Unmarshal(b, resp)
		}
		if err != nil {
			t.Fatalf("client printed response %q: %v", h, err)
		}
		resps = append(resps, resp)
	}
	return f[1], resps
}

// checkOpaque speaks protocols that are not gRPC from the app pod to orders, through the
// sidecar: each must reach its real server and come back byte for byte.
func (r *podRig) checkOpaque(t *testing.T, m interceptMode, pod *testenv.Pod) {
	for _, tc := range []struct {
		name string
		port int
		talk func(t *testing.T, c net.Conn)
	}{
		{"http/1.1", httpPort, func(t *testing.T, c net.Conn) {
			fmt.Fprintf(c, "GET /hello HTTP/1.1\r\nHost: orders:%d\r\nConnection: close\r\n\r\n", httpPort)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if want := "orders http: GET /hello"; err != nil || resp.StatusCode != http.StatusOK || string(body) != want {
				t.Errorf("GET /hello = %s %q, %v; want 200 %q", resp.Status, body, err, want)
			}
		}},
		{"tls", tlsPort, func(t *testing.T, c net.Conn) {
			tc := tls.Client(c, &tls.Config{ServerName: "orders", RootCAs: r.certs})
			if err := tc.HandshakeContext(testCtx(t)); err != nil {
				t.Fatalf("TLS handshake with orders: %v", err)
			}
			fmt.Fprintln(tc, "ping")
			line, err := bufio.NewReader(tc).ReadString('\n')
			if want := "orders tls: ping\n"; err != nil || line != want {
				t.Errorf("over TLS got %q, %v; want %q", line, err, want)
			}
		}},
		{"server first", serverFirstPort, func(t *testing.T, c net.Conn) {
			// The client sends nothing until the server greets, as with SMTP or MySQL.
			br := bufio.NewReader(c)
			greeting, err := br.ReadString('\n')
			if want := "220 orders ready\r\n"; err != nil || greeting != want {
				t.Fatalf("greeting %q, %v; want %q", greeting, err, want)
			}
			fmt.Fprint(c, "HELO app\r\n")
			line, err := br.ReadString('\n')
			if want := "250 orders got HELO app\r\n"; err != nil || line != want {
				t.Errorf("answer %q, %v; want %q", line, err, want)
			}
		}},
		{"large upload, half-close", uploadPort, func(t *testing.T, c net.Conn) {
			// The server answers only once it has read to the end: the client's half-close
			// must cross the sidecar while the answer can still come back.
			data := make([]byte, 16<<20)
			rand.Read(data)
			go func() {
				c.Write(data)
				c.(interface{ CloseWrite() error }).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			sum := sha256.Sum256(data)
			if want := fmt.Sprintf("%d %x\n", len(data), sum); err != nil || string(got) != want {
				t.Errorf("orders read %q, %v; want %q", got, err, want)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			c, err := m.dial(ctx, r, pod, tc.port)
			if err != nil {
				t.Fatalf("dialing orders:%d from %s: %v", tc.port, pod.Name, err)
			}
			defer c.Close()
			if d, ok := ctx.Deadline(); ok {
				c.SetDeadline(d)
			}
			tc.talk(t, c)
		})
	}
}

// checkExempt reads the capture rules' counters: the sidecar's own connections (to Restate, to
// orders) went through the exemption of its uid, not to the redirect.
func checkExempt(t *testing.T, pod *testenv.Pod) {
	rule := fmt.Sprintf("-m owner --uid-owner %d -j RETURN", sidecarUID)
	for _, save := range []string{"iptables-save", "iptables-legacy-save"} {
		out, err := pod.Command(testCtx(t), 0, testenv.Tool(t, save), "-c", "-t", "nat").CombinedOutput()
		if err != nil {
			t.Fatalf("%s in %s: %v\n%s", save, pod.Name, err, out)
		}
		for line := range strings.Lines(string(out)) {
			if !strings.Contains(line, rule) {
				continue
			}
			var packets, octets int
			if _, err := fmt.Sscanf(line, "[%d:%d]", &packets, &octets); err != nil || packets == 0 {
				t.Errorf("the exemption of uid %d counted %q, want packets (the sidecar's own connections)", sidecarUID, line)
			}
			return
		}
	}
	t.Fatalf("no rule %q in the nat table of %s (iptables-save, iptables-legacy-save)", rule, pod.Name)
}

// checkRefused: with the sidecar gone, the app's connections are refused at once, not left
// hanging, and each client's call fails UNAVAILABLE well before its deadline.
func (r *podRig) checkRefused(t *testing.T, m interceptMode, pod *testenv.Pod) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	c, err := m.dial(ctx, r, pod, ordersPort)
	if err == nil {
		c.Close()
		t.Fatalf("dialing orders:%d without the sidecar succeeded, want it refused", ordersPort)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > 2*time.Second {
		t.Errorf("dialing orders:%d without the sidecar: %v after %v, want connection refused at once", ordersPort, err, time.Since(start))
	}
	for _, c := range interceptClients {
		run := m.runs(c)[0]
		t.Run(run.name, func(t *testing.T) {
			lines, took := r.runClient(t, pod, c, run.env, "unary:/rgtest.v1.Echo/Call:")
			// The clients' deadline is 20s: a hang would end in DEADLINE_EXCEEDED (4) there.
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "ERR 14 ") || took > 10*time.Second {
				t.Errorf("%s client without the sidecar printed %q after %v, want ERR 14 (UNAVAILABLE) at once", c.lang, lines, took)
			}
		})
	}
}

// connectTunnel opens an HTTP CONNECT tunnel to target through the outbound listener, as a
// client honouring a proxy variable does.
func connectTunnel(ctx context.Context, pod *testenv.Pod, target string) (net.Conn, error) {
	c, err := pod.DialContext(ctx, "tcp", outboundAddr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %[1]s\r\n\r\n", target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("CONNECT %s: %w", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("CONNECT %s: %s", target, resp.Status)
	}
	return &tunnel{Conn: c, r: br}, nil
}

// tunnel is a CONNECT tunnel: reads start with what the answer's reader already buffered.
type tunnel struct {
	net.Conn
	r *bufio.Reader
}

func (c *tunnel) Read(b []byte) (int, error) { return c.r.Read(b) }
func (c *tunnel) CloseWrite() error          { return c.Conn.(*net.TCPConn).CloseWrite() }

// newPodRig makes the pod network and starts what lives in orders and restate.
func newPodRig(t *testing.T) *podRig {
	t.Helper()
	checkClientTools(t)
	pods := []string{"orders", "restate"}
	for _, m := range interceptModes {
		pods = append(pods, m.pod)
	}
	r := &podRig{net: testenv.NewPodNet(t, pods...), dir: sharedDir(t)}
	podBinaries(t, r.dir, []string{"sidecar"}, "./internal/testservice/client")

	var err error
	if r.restate, err = testenv.StartRestate(r.dir, testenv.RestateOptions{Pod: r.net.Pod("restate")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.restate.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(r.dir, "restate.log"))
			t.Logf("log of the Restate server:\n%s", tail(b, 4000))
		}
	})

	orders := r.net.Pod("orders")
	r.orders = testservice.NewApp()
	l := listenIn(t, orders, ordersPort)
	t.Cleanup(r.orders.Serve(l).Stop)
	r.serveOpaque(t, orders)
	r.startSidecar(t, orders, "inbound", fmt.Sprintf(`
inbound:
  app: 127.0.0.1:%d
  listen: 0.0.0.0:9080
  register: {admin: %s, uri: "http://%s:9080"}
  services:
    - name: rgtest.v1.Echo
`, ordersPort, r.restate.Admin, orders.Addr))
	return r
}

// checkClientTools fails, saying how to install them, when the Python or Node client cannot run.
func checkClientTools(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("/usr/bin/python3", "-c", "import grpc").CombinedOutput(); err != nil {
		t.Fatalf("Debian's /usr/bin/python3 cannot import grpc (%v: %s): run `make tools` (or apt-get install -y python3-grpcio)", err, bytes.TrimSpace(out))
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is missing: install Node.js and npm (Debian: apt-get install -y nodejs npm), then `make tools`")
	}
	if _, err := os.Stat(filepath.Join(repoRoot(), ".tools/node_modules/@grpc/grpc-js/package.json")); err != nil {
		t.Fatalf("@grpc/grpc-js is missing from .tools (%v): run `make tools`", err)
	}
}

// podBinaries puts into dir, for the pods' processes, the binaries of TestMain's build named by
// built, and builds pkgs there. The sidecar runs as its own uid, which cannot read the test's
// private temp dirs.
func podBinaries(t *testing.T, dir string, built []string, pkgs ...string) {
	t.Helper()
	for _, bin := range built {
		if err := os.Link(filepath.Join(env.bin, bin), filepath.Join(dir, bin)); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", append([]string{"build", "-o", dir + "/"}, pkgs...)...)
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %v: %v\n%s", pkgs, err, out)
	}
}

// sharedDir is a temp dir the sidecar's uid can read, removed when the test ends.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rg-pods-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startSidecar runs the sidecar binary on cfg in the pod as its own uid and waits until it is
// ready; the test's cleanup kills it.
func (r *podRig) startSidecar(t *testing.T, pod *testenv.Pod, name, cfg string) *testenv.Proc {
	t.Helper()
	path := filepath.Join(r.dir, pod.Name+"-"+name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := pod.Command(context.Background(), sidecarUID, filepath.Join(r.dir, "sidecar"), "run", "-config", path, "-health", healthAddr)
	cmd.Env = cleanEnv()
	p := testenv.Start(t, pod.Name+" "+name+" sidecar", cmd)
	hc := pod.HTTPClient()
	eventually(t, 30*time.Second, name+" sidecar ready in "+pod.Name, func() bool {
		select {
		case <-p.Done():
			t.Fatalf("%s sidecar in %s exited", name, pod.Name)
		default:
		}
		resp, err := hc.Get("http://" + healthAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// cleanEnv is the test's environment without proxy variables (which would send the pod's
// processes to a proxy of the host), plus extra.
func cleanEnv(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasSuffix(strings.ToLower(k), "_proxy") {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

func listenIn(t *testing.T, pod *testenv.Pod, port int) net.Listener {
	t.Helper()
	l, err := pod.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatalf("listening on :%d in %s: %v", port, pod.Name, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// serveOpaque serves the non-gRPC servers of the orders pod, each answering with a marker of
// orders, so a client sees it reached them.
func (r *podRig) serveOpaque(t *testing.T, pod *testenv.Pod) {
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintf(w, "orders http: %s %s", req.Method, req.URL.Path)
	})}
	go hs.Serve(listenIn(t, pod, httpPort))
	t.Cleanup(func() { hs.Close() })

	cert, pool := selfSigned(t, "orders")
	r.certs = pool
	serveConns(listenIn(t, pod, tlsPort), func(c net.Conn) {
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		line, err := bufio.NewReader(tc).ReadString('\n')
		if err == nil {
			fmt.Fprintf(tc, "orders tls: %s", line)
		}
	})
	serveConns(listenIn(t, pod, serverFirstPort), func(c net.Conn) {
		fmt.Fprint(c, "220 orders ready\r\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			fmt.Fprintf(c, "250 orders got %s", line)
		}
	})
	serveConns(listenIn(t, pod, uploadPort), func(c net.Conn) {
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err == nil {
			fmt.Fprintf(c, "%d %x\n", n, h.Sum(nil))
		}
	})
}

// serveConns serves each connection of l with f, then closes it, until l is closed.
func serveConns(l net.Listener, f func(net.Conn)) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				f(c)
			}()
		}
	}()
}

// selfSigned makes a certificate for name and the pool that trusts it.
func selfSigned(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c := issue(t, nil, name)
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return c, pool
}

// issue makes a certificate for hosts (names or addresses): a CA signed by ca, or when ca is
// nil, its own.
func issue(t *testing.T, ca *tls.Certificate, hosts ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: hosts[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	parent, signer := tmpl, any(key)
	if ca != nil {
		parent, signer = ca.Leaf, ca.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func clientSource(name string) string {
	return filepath.Join(repoRoot(), "internal/testservice/client", name)
}

func repoRoot() string {
	root, err := testenv.RepoRoot()
	if err != nil {
		panic(err) // the e2e tests run inside the repository
	}
	return root
}
