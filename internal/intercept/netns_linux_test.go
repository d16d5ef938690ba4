package intercept_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/restate-grpc/restate-grpc/internal/intercept"
	"github.com/restate-grpc/restate-grpc/internal/rawsock"
)

// In the test's network namespace, what the app (source address appAddr) sends to ports
// 50051-50053 is redirected to the listener, as iptables mode redirects an app's calls; the
// sidecar's own dials (from 127.0.0.1) are not, as the sidecar's uid is not in a pod. The
// namespace is new and empty, so fixed ports collide with nothing.
const (
	appAddr    = "127.0.0.5"
	listenAddr = "127.0.0.1:15001"
)

// TestRedirected runs iptables-mode interception in a network namespace of its own: itself
// again, in a child process inside it. It needs root, ip (iproute2) and iptables, as
// rawsock's TestOriginalDst.
func TestRedirected(t *testing.T) {
	if os.Getenv(childEnv) == "netns" {
		redirected(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Fatal("TestRedirected makes a network namespace with iptables rules, which needs root: run the tests as root, as CI does")
	}
	ip, iptables := tool(t, "ip"), tool(t, "iptables")
	ns := fmt.Sprintf("rg-intercept-%d", os.Getpid())
	run(t, ip, "netns", "add", ns)
	t.Cleanup(func() { run(t, ip, "netns", "delete", ns) })
	run(t, ip, "-n", ns, "link", "set", "lo", "up")
	run(t, ip, "netns", "exec", ns, iptables, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", appAddr,
		"--dport", "50051:50053", "-j", "REDIRECT", "--to-ports", "15001")
	cmd := exec.Command(ip, "netns", "exec", ns, os.Args[0], "-test.run=^TestRedirected$", "-test.v")
	cmd.Env = append(withoutProxyEnv(), childEnv+"=netns")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in the namespace: %v\n%s", err, out)
	}
	t.Logf("in the namespace:\n%s", out)
}

// redirected is TestRedirected inside the namespace.
func redirected(t *testing.T) {
	inner, err := net.Listen("tcp", listenAddr)
	if err != nil {
		t.Fatal(err)
	}
	l := intercept.New(rawsock.Listener(inner), intercept.Options{DetectTimeout: 100 * time.Millisecond})
	r := serveRelay(t, l, "") // calls go to their Destination
	healthServer(t, "127.0.0.1:50051")
	greeter(t, "127.0.0.1:50053")
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	ts.Listener.Close()
	if ts.Listener, err = net.Listen("tcp", "127.0.0.1:50052"); err != nil {
		t.Fatal(err)
	}
	ts.Start()
	defer ts.Close()
	app := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(appAddr)}, Timeout: 10 * time.Second}
	dial := func(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
		c, err := app.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}

	t.Run("gRPC goes to the relay with its original destination", func(t *testing.T) {
		err := check(t, "127.0.0.1:50051", grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return app.DialContext(ctx, "tcp", addr)
		}))
		if err != nil {
			t.Fatalf("Check(127.0.0.1:50051), redirected: %v", err)
		}
		if got, want := r.destinations(), "127.0.0.1:50051"; len(got) != 1 || got[0] != want {
			t.Errorf("Request.Destination of the calls = %q, want [%q]", got, want)
		}
	})
	t.Run("HTTP/1.1 is relayed opaque", func(t *testing.T) {
		tr := &http.Transport{DialContext: app.DialContext}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://127.0.0.1:50052/there")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if got, want := readAll(resp.Body), "hello /there"; got != want {
			t.Errorf("GET /there, redirected = %q, want %q", got, want)
		}
	})
	t.Run("a server-first protocol is relayed opaque", func(t *testing.T) {
		c, br := dial(t, "127.0.0.1:50053")
		greet(t, c, br, "QUIT\r\n")
	})
	t.Run("a CONNECT is relayed to where it was going", func(t *testing.T) {
		c, br := dial(t, "127.0.0.1:50053")
		const line = "CONNECT orders:50051 HTTP/1.1\r\n"
		io.WriteString(c, line) // at once: the sniff sees CONNECT, on a redirected connection
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if got, want := readAll(br), "220 greeter ready\r\n221 bye "+line; got != want {
			t.Errorf("answer = %q, want %q then the end", got, want)
		}
	})
	t.Run("what is neither HTTP/2 nor CONNECT, not redirected, is closed", func(t *testing.T) {
		c, br := dial(t, listenAddr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if got, err := io.ReadAll(br); len(got) > 0 || err != nil {
			t.Errorf("read %q, %v; want the end at once", got, err)
		}
	})
}

// tool finds a system tool on PATH or in /usr/sbin, where Debian puts them.
func tool(t *testing.T, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatalf("TestRedirected needs %s: run `make tools` (or, on Debian, apt-get install -y iptables iproute2)", name)
	return ""
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
