package intercept_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/restate-grpc/restate-grpc/internal/intercept"
	"github.com/restate-grpc/restate-grpc/internal/rawsock"
	"github.com/restate-grpc/restate-grpc/proxy"
)

// listen serves an intercepting listener on loopback, as the sidecar does (raw sockets under
// it), until the test ends. Without a relay (relay below), something must call Accept.
func listen(t *testing.T, o intercept.Options) *intercept.Listener {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := intercept.New(rawsock.Listener(inner), o)
	t.Cleanup(func() { l.Close() })
	return l
}

// acceptAll calls Accept until the listener closes, closing what it returns: for tests of
// what the Listener serves itself.
func acceptAll(t *testing.T, l net.Listener) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
}

// relay serves l with a relay whose Director sends every call to upstream and records each
// Request.Destination, as the sidecar's Director will read it.
type relay struct {
	mu    sync.Mutex
	dests []string
}

func (r *relay) destinations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.dests...)
}

// An empty upstream is the Destination: where the app was going.
func serveRelay(t *testing.T, l net.Listener, upstream string) *relay {
	t.Helper()
	r := &relay{}
	s := &proxy.Server{
		Director: func(req *proxy.Request) proxy.Decision {
			r.mu.Lock()
			r.dests = append(r.dests, req.Destination)
			r.mu.Unlock()
			if upstream == "" {
				return proxy.Decision{Upstream: req.Destination}
			}
			return proxy.Decision{Upstream: upstream}
		},
		Destination: intercept.Destination,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(l)
	}()
	t.Cleanup(func() { s.Close(); <-done })
	return r
}

// healthServer is a gRPC server (the app's callee) answering grpc.health.v1.Health.
func healthServer(t *testing.T, addr string) string {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

func check(t *testing.T, addr string, opts ...grpc.DialOption) error {
	t.Helper()
	cc, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// TestExplicit: plain h2c on the listener (the app dials the sidecar) is still served, with no
// destination.
func TestExplicit(t *testing.T) {
	l := listen(t, intercept.Options{})
	r := serveRelay(t, l, healthServer(t, "127.0.0.1:0"))
	if err := check(t, l.Addr().String()); err != nil {
		t.Fatalf("Check through the listener: %v", err)
	}
	if got := r.destinations(); len(got) != 1 || got[0] != "" {
		t.Errorf("Request.Destination of the calls = %q, want [\"\"]", got)
	}
}

// childEnv, set, makes a test the child process another test started.
const childEnv = "INTERCEPT_TEST_CHILD"

// TestGRPCGoHTTPSProxy: an unmodified grpc-go client, with https_proxy pointing at the listener,
// reaches orders.test:50051 (a name nothing resolves) through CONNECT; the relay learns the
// name. grpc-go reads the proxy variables once per process, so the client is a child process.
func TestGRPCGoHTTPSProxy(t *testing.T) {
	if os.Getenv(childEnv) == "grpc" {
		if err := check(t, "orders.test:50051"); err != nil {
			t.Fatalf("Check(orders.test:50051) via https_proxy: %v", err)
		}
		return
	}
	l := listen(t, intercept.Options{})
	r := serveRelay(t, l, healthServer(t, "127.0.0.1:0"))
	cmd := exec.Command(os.Args[0], "-test.run=^TestGRPCGoHTTPSProxy$", "-test.v")
	cmd.Env = append(withoutProxyEnv(), childEnv+"=grpc", "HTTPS_PROXY=http://"+l.Addr().String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the grpc-go client: %v\n%s", err, out)
	}
	if got, want := r.destinations(), "orders.test:50051"; len(got) != 1 || got[0] != want {
		t.Errorf("Request.Destination of the calls = %q, want [%q]", got, want)
	}
}

func withoutProxyEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(name) {
		case "https_proxy", "http_proxy", "grpc_proxy", "no_proxy", "no_grpc_proxy", childEnv:
			continue
		}
		env = append(env, kv)
	}
	return env
}

// dialConnect sends a CONNECT for target to the listener and reads the answer.
func dialConnect(t *testing.T, l net.Listener, target string) (*net.TCPConn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatalf("reading the answer to CONNECT %s: %v", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %s, want 200", target, resp.Status)
	}
	return c.(*net.TCPConn), br, resp
}

// TestConnectRefused: a malformed CONNECT is answered 400, one to the sidecar's own listeners
// or outside the allow-list 403, each with a reason, and the connection is closed.
func TestConnectRefused(t *testing.T) {
	inbound, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inbound.Close()
	l := listen(t, intercept.Options{
		Self:  []net.Addr{inbound.Addr()},
		Allow: func(host, port string) bool { return host != "elsewhere.test" },
	})
	acceptAll(t, l)
	_, own, _ := net.SplitHostPort(l.Addr().String())
	for _, tc := range []struct {
		name, req string
		code      int
		reasonHas string
	}{
		{"no port", "CONNECT orders HTTP/1.1\r\n\r\n", 400, `"orders": want host:port`},
		{"port out of range", "CONNECT orders:65536 HTTP/1.1\r\n\r\n", 400, "want host:port"},
		{"port zero", "CONNECT orders:0 HTTP/1.1\r\n\r\n", 400, "want host:port"},
		{"no host", "CONNECT :50051 HTTP/1.1\r\n\r\n", 400, "want host:port"},
		{"a path", "CONNECT /orders HTTP/1.1\r\nHost: orders:50051\r\n\r\n", 400, "want host:port"},
		{"bad header line", "CONNECT orders:50051 HTTP/1.1\r\nno colon here\r\n\r\n", 400, "malformed CONNECT request"},
		{"bad version", "CONNECT orders:50051 HTTP/2.0\r\n\r\n", 400, "want HTTP/1.1"},
		{"a body", "CONNECT orders:50051 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 400, "no body"},
		{"too long", "CONNECT orders:50051 HTTP/1.1\r\nX-Pad: " + strings.Repeat("a", 9000) + "\r\n\r\n", 400, "longer than 8192 bytes"},
		{"own listener", "CONNECT 127.0.0.1:" + own + " HTTP/1.1\r\n\r\n", 403, "sidecar's own listeners"},
		{"own listener by localhost", "CONNECT localhost:" + own + " HTTP/1.1\r\n\r\n", 403, "sidecar's own listeners"},
		{"own listener, port with a leading zero", "CONNECT 127.0.0.1:0" + own + " HTTP/1.1\r\n\r\n", 403, "sidecar's own listeners"},
		{"another own listener", "CONNECT " + inbound.Addr().String() + " HTTP/1.1\r\n\r\n", 403, "sidecar's own listeners"},
		{"outside the allow-list", "CONNECT elsewhere.test:443 HTTP/1.1\r\n\r\n", 403, "not an allowed destination"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tc.req)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.reasonHas) {
				t.Errorf("answer = %d %q, want %d with a reason containing %q", resp.StatusCode, body, tc.code, tc.reasonHas)
			}
			if n, err := br.Read(make([]byte, 1)); err == nil {
				t.Errorf("after the answer, read %d bytes, want the connection closed", n)
			}
		})
	}
}

// TestConnectHTTP1: an HTTP/1.1 request through a CONNECT tunnel reaches its server, opaque.
func TestConnectHTTP1(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	defer ts.Close()
	l := listen(t, intercept.Options{DetectTimeout: time.Minute}) // the client speaks first: no wait
	acceptAll(t, l)
	c, br, _ := dialConnect(t, l, ts.Listener.Addr().String())
	io.WriteString(c, "GET /there HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if got, want := string(body), "hello /there"; resp.StatusCode != 200 || got != want {
		t.Errorf("GET /there through CONNECT = %s %q, want 200 %q", resp.Status, got, want)
	}
}

// greeter is a server-first protocol (as SMTP): it greets, reads one line, answers, closes.
func greeter(t *testing.T, addr string) string {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "220 greeter ready\r\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			fmt.Fprintf(c, "221 bye %s", line)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

// greet runs the greeter's dialogue on c, sending line.
func greet(t *testing.T, c net.Conn, br *bufio.Reader, line string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if got, err := br.ReadString('\n'); got != "220 greeter ready\r\n" {
		t.Fatalf("greeting = %q, %v; want %q", got, err, "220 greeter ready\r\n")
	}
	io.WriteString(c, line)
	if got, want := readAll(br), "221 bye "+line; got != want {
		t.Errorf("answer = %q, want %q then the end", got, want)
	}
}

func readAll(r io.Reader) string {
	b, _ := io.ReadAll(r)
	return string(b)
}

// TestConnectServerFirst: a protocol whose server speaks first works through CONNECT: the
// sniff gives up waiting for the client and relays.
func TestConnectServerFirst(t *testing.T) {
	addr := greeter(t, "127.0.0.1:0")
	l := listen(t, intercept.Options{DetectTimeout: 50 * time.Millisecond})
	acceptAll(t, l)
	c, br, _ := dialConnect(t, l, addr)
	greet(t, c, br, "QUIT\r\n")
}

// TestConnectTLS: a TLS handshake and request through CONNECT, as net/http's own proxy
// support makes them, reach a TLS server.
func TestConnectTLS(t *testing.T) {
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secret")
	}))
	defer ts.Close()
	l := listen(t, intercept.Options{})
	acceptAll(t, l)
	tr := ts.Client().Transport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: l.Addr().String()})
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(ts.URL)
	if err != nil {
		t.Fatalf("GET %s through the listener: %v", ts.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "secret" || resp.TLS == nil {
		t.Errorf("GET over TLS through CONNECT = %s %q (TLS %v), want 200 %q over TLS", resp.Status, body, resp.TLS != nil, "secret")
	}
}

// hasher is a server that reads until the client half-closes, then answers with the SHA-256
// and the length of what it read.
func hasher(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.CopyBuffer(h, struct{ io.Reader }{c}, make([]byte, 32<<10))
		fmt.Fprintf(c, "%x %d %v", h.Sum(nil), n, err)
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

// TestConnectLargeUpload: 64 MiB up a CONNECT tunnel, then a half-close, reach the server
// intact, and its answer comes back; the relay allocates far less than it carries.
func TestConnectLargeUpload(t *testing.T) {
	const size = 64 << 20
	addr := hasher(t)
	l := listen(t, intercept.Options{})
	acceptAll(t, l)
	c, br, _ := dialConnect(t, l, addr)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for sent := 0; sent < size; sent += len(buf) {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		h.Write(buf)
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("after %d bytes: %v", sent, err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	answer, err := io.ReadAll(br)
	runtime.ReadMemStats(&after)
	if want := fmt.Sprintf("%s %d <nil>", hex.EncodeToString(h.Sum(nil)), size); string(answer) != want || err != nil {
		t.Errorf("the server's answer = %q, %v; want %q", answer, err, want)
	}
	if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(8<<20); got > limit {
		t.Errorf("allocated %d bytes while relaying %d, want at most %d", got, size, limit)
	}
}

// TestMaxConns: past MaxConns connections being sniffed, a new one is closed at once; the
// ones before it are still served.
func TestMaxConns(t *testing.T) {
	addr := greeter(t, "127.0.0.1:0")
	l := listen(t, intercept.Options{MaxConns: 2, DetectTimeout: time.Minute})
	acceptAll(t, l)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	extra, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the connection past MaxConns: read %d, %v; want it closed", n, err)
	}
	// The held ones are being sniffed: a CONNECT on one is served.
	fmt.Fprintf(held[0], "CONNECT %s HTTP/1.1\r\n\r\n", addr)
	br := bufio.NewReader(held[0])
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT on a held connection: %v, %v; want 200", resp, err)
	}
}

// TestClose: Close ends the connections the Listener serves (sniffing and relaying) and Accept.
func TestClose(t *testing.T) {
	addr := greeter(t, "127.0.0.1:0")
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := intercept.New(inner, intercept.Options{DetectTimeout: time.Minute})
	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	silent, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	_, br, _ := dialConnect(t, l, addr) // relaying: the greeter waits for its line
	l.Close()
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
	for name, r := range map[string]io.Reader{"sniffed": silent, "tunnel": br} {
		if got, err := io.ReadAll(r); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s connection after Close: read %q, %v; want its end", name, got, err)
		}
	}
}

// fakeListener hands out what a test pushes.
type fakeListener struct {
	next chan func() (net.Conn, error)
	addr net.Addr
}

func (f *fakeListener) Accept() (net.Conn, error) {
	next, ok := <-f.next
	if !ok {
		return nil, net.ErrClosed
	}
	return next()
}
func (f *fakeListener) Close() error   { return nil }
func (f *fakeListener) Addr() net.Addr { return f.addr }

// TestAcceptErrors: out of descriptors, Accept keeps going; a lasting error ends it. An h2c
// connection comes out with its sniffed bytes replayed.
func TestAcceptErrors(t *testing.T) {
	f := &fakeListener{next: make(chan func() (net.Conn, error)), addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}
	l := intercept.New(f, intercept.Options{})
	defer l.Close()
	got := make(chan net.Conn)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Errorf("Accept = %v, want the connection after EMFILE", err)
		}
		got <- c
	}()
	f.next <- func() (net.Conn, error) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", syscall.EMFILE)}
	}
	app, side := net.Pipe()
	defer app.Close()
	f.next <- func() (net.Conn, error) { return side, nil }
	const first = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n and more"
	go io.WriteString(app, first)
	c := <-got
	if c == nil {
		return
	}
	defer c.Close()
	b := make([]byte, len(first))
	if _, err := io.ReadFull(c, b); string(b) != first {
		t.Errorf("the accepted connection reads %q, %v; want %q", b, err, first)
	}
	if d := intercept.Destination(c); d != "" {
		t.Errorf("Destination of a connection that was not redirected = %q, want empty", d)
	}
	broken := errors.New("broken for good")
	f.next <- func() (net.Conn, error) { return nil, broken }
	if _, err := l.Accept(); !errors.Is(err, broken) {
		t.Errorf("Accept after a lasting error = %v, want %v", err, broken)
	}
}

// TestConnectPipelined: a client that sends its HTTP/2 preface right behind the CONNECT,
// without waiting for the 200, loses none of it: Accept's connection reads it, with the
// CONNECT target as its Destination.
func TestConnectPipelined(t *testing.T) {
	l := listen(t, intercept.Options{})
	got := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Errorf("Accept = %v", err)
		}
		got <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const tunnel = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n and then frames"
	io.WriteString(c, "CONNECT orders.test:50051 HTTP/1.1\r\nHost: orders.test:50051\r\n\r\n"+tunnel)
	const answer = "HTTP/1.1 200 Connection established\r\n\r\n"
	b := make([]byte, len(answer))
	if _, err := io.ReadFull(c, b); string(b) != answer {
		t.Fatalf("answer = %q, %v; want %q", b, err, answer)
	}
	s := <-got
	if s == nil {
		return
	}
	defer s.Close()
	b = make([]byte, len(tunnel))
	if _, err := io.ReadFull(s, b); string(b) != tunnel {
		t.Errorf("the accepted connection reads %q, %v; want %q", b, err, tunnel)
	}
	if got, want := intercept.Destination(s), "orders.test:50051"; got != want {
		t.Errorf("Destination = %q, want %q", got, want)
	}
}

// TestAlso: a second inner listener (IPv6 loopback beside IPv4) is served alike, and counts as
// one of the sidecar's own for CONNECT.
func TestAlso(t *testing.T) {
	v4, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	v6, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		v4.Close()
		t.Fatalf("no IPv6 loopback, which iptables mode redirects IPv6 to: enable it (sysctl -w net.ipv6.conf.lo.disable_ipv6=0): %v", err)
	}
	l := intercept.New(v4, intercept.Options{Also: []net.Listener{v6}})
	defer l.Close()
	r := serveRelay(t, l, healthServer(t, "127.0.0.1:0"))
	if err := check(t, v6.Addr().String()); err != nil {
		t.Errorf("Check through the IPv6 listener: %v", err)
	}
	if got := r.destinations(); len(got) != 1 || got[0] != "" {
		t.Errorf("Request.Destination of the calls = %q, want [\"\"]", got)
	}
	c, err := net.Dial("tcp", v4.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\n\r\n", v6.Addr())
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("CONNECT to the IPv6 listener: %v, %v; want 403", resp, err)
	}
}
