package rawsock_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/restate-grpc/restate-grpc/internal/rawsock"
)

// In the test's own network namespace, connections to sentPort are redirected to listenPort, as
// iptables mode will redirect an app's calls to the sidecar. The namespace is new and empty, so
// fixed ports collide with nothing.
const (
	sentPort   = 50051
	listenPort = 15001
)

// TestOriginalDst redirects real connections with iptables, IPv4 and IPv6, and reads where they
// were sent, from wrapped and from plain connections. It needs root, ip (iproute2) and iptables:
// `make test` installs the tools where they are missing.
func TestOriginalDst(t *testing.T) {
	ns := redirectingNetns(t)
	for _, tc := range []struct {
		name, listen, dial, want string
	}{
		{"ipv4 redirected", "127.0.0.1", "127.0.0.1:50051", "127.0.0.1:50051"},
		{"ipv4 not redirected", "127.0.0.1", "127.0.0.1:15001", "127.0.0.1:15001"},
		{"ipv4 redirected to a dual-stack listener", "::", "127.0.0.1:50051", "127.0.0.1:50051"},
		{"ipv6 redirected", "::1", "[::1]:50051", "[::1]:50051"},
		{"ipv6 not redirected", "::1", "[::1]:15001", "[::1]:15001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l net.Listener
			var c net.Conn
			inNetns(t, ns, func() (err error) {
				if l, err = net.Listen("tcp", net.JoinHostPort(tc.listen, fmt.Sprint(listenPort))); err != nil {
					return err
				}
				if c, err = net.Dial("tcp", tc.dial); err != nil {
					l.Close()
				}
				return err
			})
			defer l.Close()
			defer c.Close()
			s, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			want := netip.MustParseAddrPort(tc.want)
			for _, s := range []net.Conn{s, rawsock.Wrap(s)} {
				if got, err := rawsock.OriginalDst(s); got != want || err != nil {
					t.Errorf("OriginalDst(%T from %v) = %v, %v; want %v", s, c.LocalAddr(), got, err, want)
				}
				if !nonBlocking(t, s) {
					t.Errorf("after OriginalDst(%T) the socket is blocking, want O_NONBLOCK", s)
				}
			}
		})
	}
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	if got, err := rawsock.OriginalDst(p); err == nil {
		t.Errorf("OriginalDst(pipe) = %v, nil; want an error", got)
	}
}

// redirectingNetns makes a network namespace with loopback up and sentPort redirected to
// listenPort, for IPv4 and IPv6, and deletes it when the test ends.
func redirectingNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("TestOriginalDst makes a network namespace with iptables rules, which needs root: run the tests as root, as CI does")
	}
	ip := tool(t, "ip")
	ns := fmt.Sprintf("rg-test-%d", os.Getpid())
	run(t, ip, "netns", "add", ns)
	t.Cleanup(func() { run(t, ip, "netns", "delete", ns) })
	run(t, ip, "-n", ns, "link", "set", "lo", "up")
	for _, iptables := range []string{tool(t, "iptables"), tool(t, "ip6tables")} {
		run(t, ip, "netns", "exec", ns, iptables, "-t", "nat", "-A", "OUTPUT", "-p", "tcp",
			"--dport", fmt.Sprint(sentPort), "-j", "REDIRECT", "--to-ports", fmt.Sprint(listenPort))
	}
	return ns
}

// tool finds a system tool on PATH or in /usr/sbin, where Debian puts them and where a PATH
// may not look.
func tool(t *testing.T, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatalf("TestOriginalDst needs %s: run `make tools` (or, on Debian, apt-get install -y iptables iproute2)", name)
	return ""
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// inNetns runs f on a thread moved into the namespace ns, so the sockets f makes are there; they
// stay there whichever thread uses them later.
func inNetns(t *testing.T, ns string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		// The thread is never unlocked, so it ends with this goroutine instead of running
		// other goroutines in the namespace.
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		done <- f()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
