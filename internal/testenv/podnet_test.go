package testenv_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

// TestPodNet checks the rig the interception tests stand on: pods reach each other by name and
// address, a pod's loopback is its own, commands run in a pod as the uid asked for, and
// nothing of the rig outlives its test.
func TestPodNet(t *testing.T) {
	n := testenv.NewPodNet(t, "app", "orders")
	app, orders := n.Pod("app"), n.Pod("orders")
	l, err := orders.Listen("tcp", ":50051")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			got <- strings.TrimSpace(line)
		}
	}()

	t.Run("by name", func(t *testing.T) {
		// bash's /dev/tcp resolves with getaddrinfo, as any app's resolver does: through
		// /etc/hosts, which `ip netns exec` replaced with the pod's.
		out, err := app.Command(testCtx(t), 0, "bash", "-c", "echo hello >/dev/tcp/orders/50051").CombinedOutput()
		if err != nil {
			t.Fatalf("dialing orders:50051 from app: %v\n%s", err, out)
		}
		if s := <-got; s != "hello" {
			t.Errorf("orders got %q, want %q", s, "hello")
		}
	})

	t.Run("by address", func(t *testing.T) {
		c, err := app.DialContext(testCtx(t), "tcp", orders.Addr.String()+":50051")
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("direct\n"))
		c.Close()
		if s := <-got; s != "direct" {
			t.Errorf("orders got %q, want %q", s, "direct")
		}
	})

	t.Run("own loopback", func(t *testing.T) {
		host, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer host.Close()
		inPod, err := app.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer inPod.Close()
		for _, tc := range []struct {
			name string
			dial func(context.Context, string, string) (net.Conn, error)
			addr string
		}{
			{"the host's loopback from the pod", app.DialContext, host.Addr().String()},
			{"the pod's loopback from the host", new(net.Dialer).DialContext, inPod.Addr().String()},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c, err := tc.dial(ctx, "tcp", tc.addr)
			cancel()
			if err == nil {
				c.Close()
				t.Errorf("%s: dialing %s succeeded, want it unreachable", tc.name, tc.addr)
			}
		}
	})

	t.Run("uid", func(t *testing.T) {
		for _, uid := range []int{0, 1337} {
			out, err := app.Command(testCtx(t), uid, "id", "-u").Output()
			if got, want := strings.TrimSpace(string(out)), strconv.Itoa(uid); err != nil || got != want {
				t.Errorf("id -u in app as %d = %q, %v; want %q", uid, got, err, want)
			}
		}
	})

	t.Run("hosts file", func(t *testing.T) {
		out, err := app.Command(testCtx(t), 0, "getent", "hosts", "orders").Output()
		if err != nil || !strings.HasPrefix(string(out), orders.Addr.String()+" ") {
			t.Errorf("getent hosts orders in app = %q, %v; want %s", out, err, orders.Addr)
		}
	})
}

// TestPodNetCleanup checks that a rig's namespaces, hosts files and processes are gone after its
// test, and that a namespace left with the same name (by a crashed run) does not stop a rig.
func TestPodNetCleanup(t *testing.T) {
	var ns []string
	var pid int
	t.Run("rig", func(t *testing.T) {
		n := testenv.NewPodNet(t, "app")
		app := n.Pod("app")
		ns = append(ns, app.NS)
		p := testenv.Start(t, "sleep", app.Command(context.Background(), 1337, "sleep", "600"))
		pid = p.Pid()
	})
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d after its test: kill(0) = %v, want ESRCH", pid, err)
	}
	for _, name := range ns {
		for _, path := range []string{"/run/netns/" + name, "/etc/netns/" + name} {
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s after its test: stat = %v, want it gone", path, err)
			}
		}
	}

	// What a crashed run of the same names leaves: the namespace and its hosts file.
	stale := ns[0]
	if out, err := exec.Command(testenv.Tool(t, "ip"), "netns", "add", stale).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", stale, err, out)
	}
	if err := os.MkdirAll("/etc/netns/"+stale, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/etc/netns/"+stale+"/hosts", []byte("10.213.0.99 app\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	app := testenv.NewPodNet(t, "app").Pod("app")
	if app.NS != stale {
		t.Fatalf("the new rig's app namespace = %s, want %s (the stale one's name)", app.NS, stale)
	}
	out, err := app.Command(testCtx(t), 0, "getent", "hosts", "app").Output()
	if want := app.Addr.String() + " "; err != nil || !strings.HasPrefix(string(out), want) {
		t.Errorf("getent hosts app in the new rig = %q, %v; want %s", out, err, app.Addr)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestPodNetRestate runs a Restate server in a pod: another pod reaches its ingress and admin
// API at the pod's address.
func TestPodNetRestate(t *testing.T) {
	n := testenv.NewPodNet(t, "app", "restate")
	r, err := testenv.StartRestate(t.TempDir(), testenv.RestateOptions{Pod: n.Pod("restate")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	c := n.Pod("app").HTTPClient()
	for _, u := range []string{r.Ingress + "/restate/health", r.Admin + "/health"} {
		if want := "http://" + n.Pod("restate").Addr.String() + ":"; !strings.HasPrefix(u, want) {
			t.Errorf("server URL %s, want it at %s", u, want)
		}
		resp, err := c.Get(u)
		if err != nil {
			t.Errorf("GET %s from app: %v", u, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s from app: %s, want 200 OK", u, resp.Status)
		}
	}
}
