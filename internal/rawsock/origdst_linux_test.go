package rawsock_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/restate-grpc/restate-grpc/internal/rawsock"
	"github.com/restate-grpc/restate-grpc/internal/testenv"
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
			inNS(t, ns, func() (err error) {
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
	ip := testenv.Tool(t, "ip")
	ns := fmt.Sprintf("rg-test-%d", os.Getpid())
	testenv.RunTool(t, ip, "netns", "add", ns)
	t.Cleanup(func() { testenv.RunTool(t, ip, "netns", "delete", ns) })
	testenv.RunTool(t, ip, "-n", ns, "link", "set", "lo", "up")
	for _, iptables := range []string{testenv.Tool(t, "iptables"), testenv.Tool(t, "ip6tables")} {
		testenv.RunTool(t, ip, "netns", "exec", ns, iptables, "-t", "nat", "-A", "OUTPUT", "-p", "tcp",
			"--dport", fmt.Sprint(sentPort), "-j", "REDIRECT", "--to-ports", fmt.Sprint(listenPort))
	}
	return ns
}

// inNS runs f in the network namespace ns and fails the test if it fails.
func inNS(t *testing.T, ns string, f func() error) {
	t.Helper()
	if err := testenv.InNetns(ns, f); err != nil {
		t.Fatal(err)
	}
}
