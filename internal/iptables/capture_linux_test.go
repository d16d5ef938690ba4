package iptables_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/restate-grpc/restate-grpc/internal/iptables"
	"github.com/restate-grpc/restate-grpc/internal/rawsock"
	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

// The pod's network in the test: the app's namespace reaches a peer namespace over a veth
// pair, at documentation addresses that exist only inside the two namespaces.
const (
	appAddr4, peerAddr4 = "192.0.2.1", "192.0.2.2"
	appAddr6, peerAddr6 = "2001:db8::1", "2001:db8::2"
	proxyUID            = 1337
	toPort              = 15001
)

// TestCapture applies the rules in a network namespace it makes, through each backend, and
// checks what iptables-save shows, that applying again changes nothing, which connections
// really reach the outbound listener (with their original destination), and that removing
// the rules leaves no trace. It needs root, ip (iproute2), iptables and bash: `make test`
// installs the tools where they are missing, and CI runs the tests as root.
func TestCapture(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestCapture makes network namespaces and writes iptables rules in them, which needs root: run the tests as root, as CI does")
	}
	for _, b := range []iptables.Backend{iptables.NFT, iptables.Legacy} {
		t.Run(string(b), func(t *testing.T) { testCapture(t, b) })
	}
}

func testCapture(t *testing.T, backend iptables.Backend) {
	app, peer := podNetwork(t, fmt.Sprintf("rg-ipt-%d-%s", os.Getpid(), backend))
	ctx := context.Background()
	rules := iptables.Rules{ExcludePorts: []uint16{9080, 15021, 5432}, ToPort: toPort, ProxyUID: proxyUID}
	opts := iptables.Options{Backend: backend}
	apply := func() {
		t.Helper()
		inNS(t, app, func() error {
			got, err := iptables.Apply(ctx, rules, opts)
			if err == nil && got != backend {
				err = fmt.Errorf("Apply used backend %s, want %s", got, backend)
			}
			return err
		})
	}

	apply()
	want := map[iptables.Family][]string{}
	for _, f := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
		lo := map[iptables.Family]string{iptables.IPv4: "127.0.0.0/8", iptables.IPv6: "::1/128"}[f]
		want[f] = []string{
			":RESTATE_GRPC_OUTPUT - [0:0]",
			"-A OUTPUT -p tcp -j RESTATE_GRPC_OUTPUT",
			"-A RESTATE_GRPC_OUTPUT -m owner --uid-owner 1337 -j RETURN",
			"-A RESTATE_GRPC_OUTPUT -o lo -j RETURN",
			"-A RESTATE_GRPC_OUTPUT -d " + lo + " -j RETURN",
			"-A RESTATE_GRPC_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
			"-A RESTATE_GRPC_OUTPUT -p tcp -m tcp --dport 9080 -j RETURN",
			"-A RESTATE_GRPC_OUTPUT -p tcp -m tcp --dport 15021 -j RETURN",
			"-A RESTATE_GRPC_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
		}
		if got := natRules(t, app, backend, f); !slices.Equal(got, want[f]) {
			t.Fatalf("%s iptables-save -t nat after Apply:\n%s\nwant\n%s", f, strings.Join(got, "\n"), strings.Join(want[f], "\n"))
		}
	}
	apply()
	for f, w := range want {
		if got := natRules(t, app, backend, f); !slices.Equal(got, w) {
			t.Errorf("%s iptables-save -t nat after a second Apply:\n%s\nwant the same as after the first\n%s", f, strings.Join(got, "\n"), strings.Join(w, "\n"))
		}
	}
	inNS(t, app, func() error {
		got, err := iptables.Detect(ctx, []iptables.Family{iptables.IPv4, iptables.IPv6})
		if err == nil && got != backend {
			err = fmt.Errorf("Detect() = %s in a namespace with %s rules, want %s", got, backend, backend)
		}
		return err
	})

	arrivals := make(chan arrival, 1)
	listen(t, app, "outbound listener", arrivals, "127.0.0.1", "::1")
	listen(t, app, "app's own listener", arrivals, "::")
	listen(t, peer, "peer", arrivals, "::")
	dial4, dial6 := net.JoinHostPort(peerAddr4, "50051"), net.JoinHostPort(peerAddr6, "50051")
	tests := []struct {
		name    string
		addr    string
		asProxy bool
		want    string // the listener reached
	}{
		{"IPv4 captured", dial4, false, "outbound listener"},
		{"IPv6 captured", dial6, false, "outbound listener"},
		{"IPv4 from the proxy uid", dial4, true, "peer"},
		{"IPv6 from the proxy uid", dial6, true, "peer"},
		{"excluded port", net.JoinHostPort(peerAddr4, "5432"), false, "peer"},
		{"inbound port", net.JoinHostPort(peerAddr6, "9080"), false, "peer"},
		{"health port", net.JoinHostPort(peerAddr4, "15021"), false, "peer"},
		{"IPv4 loopback", "127.0.0.1:50051", false, "app's own listener"},
		{"IPv6 loopback", "[::1]:50051", false, "app's own listener"},
		{"to the app's own address", net.JoinHostPort(appAddr4, "50051"), false, "app's own listener"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := connect(t, app, tc.addr, tc.asProxy, arrivals)
			if got.listener != tc.want {
				t.Fatalf("a connection to %s (proxy uid: %v) reached the %s, want the %s", tc.addr, tc.asProxy, got.listener, tc.want)
			}
			if tc.want == "outbound listener" && got.origDst != netip.MustParseAddrPort(tc.addr) {
				t.Errorf("OriginalDst of a connection to %s = %v, want %s", tc.addr, got.origDst, tc.addr)
			}
		})
	}

	for range 2 { // removing twice: the second finds nothing and does nothing
		inNS(t, app, func() error { _, err := iptables.Remove(ctx, opts); return err })
		for _, f := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
			if got := natRules(t, app, backend, f); len(got) != 0 {
				t.Errorf("%s iptables-save -t nat after Remove:\n%s\nwant no trace of %s", f, strings.Join(got, "\n"), iptables.Chain)
			}
		}
	}
	if got := connect(t, app, dial4, false, arrivals); got.listener != "peer" {
		t.Errorf("after Remove a connection to %s reached the %s, want the peer", dial4, got.listener)
	}
}

// podNetwork makes two network namespaces, name (the app's) and name-peer, joined by a veth
// pair, and deletes them when the test ends.
func podNetwork(t *testing.T, name string) (app, peer string) {
	t.Helper()
	ip := testenv.Tool(t, "ip")
	app, peer = name, name+"-peer"
	for _, ns := range []string{app, peer} {
		testenv.RunTool(t, ip, "netns", "add", ns)
		t.Cleanup(func() { testenv.RunTool(t, ip, "netns", "delete", ns) })
		testenv.RunTool(t, ip, "-n", ns, "link", "set", "lo", "up")
	}
	testenv.RunTool(t, ip, "-n", app, "link", "add", "rgipt0", "type", "veth", "peer", "name", "rgipt1", "netns", peer)
	for _, c := range []struct{ ns, dev, a4, a6 string }{{app, "rgipt0", appAddr4, appAddr6}, {peer, "rgipt1", peerAddr4, peerAddr6}} {
		testenv.RunTool(t, ip, "-n", c.ns, "addr", "add", c.a4+"/24", "dev", c.dev)
		// nodad: the address is usable at once instead of after duplicate address detection.
		testenv.RunTool(t, ip, "-n", c.ns, "addr", "add", c.a6+"/64", "dev", c.dev, "nodad")
		testenv.RunTool(t, ip, "-n", c.ns, "link", "set", c.dev, "up")
	}
	return app, peer
}

// natRules returns the lines of the family's nat table that name Chain, as the backend's
// iptables-save prints them in ns.
func natRules(t *testing.T, ns string, b iptables.Backend, f iptables.Family) []string {
	t.Helper()
	out, err := exec.Command(testenv.Tool(t, "ip"), "netns", "exec", ns, testenv.Tool(t, b.Binary(f, "save")), "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("%s -t nat in %s: %v\n%s", b.Binary(f, "save"), ns, err, out)
	}
	var lines []string
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, iptables.Chain) && !strings.HasPrefix(line, "#") {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines
}

type arrival struct {
	listener string
	token    string
	origDst  netip.AddrPort
}

// listen listens on toPort at each address in ns (or, for "::", on every port a test dials)
// and reports each connection's first line and original destination on arrivals.
func listen(t *testing.T, ns, name string, arrivals chan<- arrival, addrs ...string) {
	t.Helper()
	var ports []string
	if addrs[0] == "::" {
		ports = []string{"50051", "5432", "9080", "15021"}
	} else {
		ports = []string{fmt.Sprint(toPort)}
	}
	var wg sync.WaitGroup
	var ls []net.Listener
	stop := make(chan struct{}) // frees an acceptor whose arrival no test reads
	t.Cleanup(func() {
		for _, l := range ls {
			l.Close()
		}
		close(stop)
		wg.Wait()
	})
	for _, a := range addrs {
		for _, p := range ports {
			var l net.Listener
			inNS(t, ns, func() (err error) { l, err = net.Listen("tcp", net.JoinHostPort(a, p)); return err })
			ls = append(ls, l)
			wg.Go(func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.SetDeadline(time.Now().Add(10 * time.Second))
					token, _ := bufio.NewReader(c).ReadString('\n')
					dst, _ := rawsock.OriginalDst(c)
					c.Close()
					select {
					case arrivals <- arrival{name, strings.TrimSpace(token), dst}:
					case <-stop:
						return
					}
				}
			})
		}
	}
}

// connect connects from ns to addr, as root or as the proxy's uid (in a child process: iptables
// matches the uid of the socket's owner), sends a token line, and returns where it arrived.
func connect(t *testing.T, ns, addr string, asProxy bool, arrivals <-chan arrival) arrival {
	t.Helper()
	token := fmt.Sprintf("%s-%v-%d", addr, asProxy, time.Now().UnixNano())
	bash := testenv.Tool(t, "bash")
	inNS(t, ns, func() error {
		if asProxy {
			ap := netip.MustParseAddrPort(addr)
			cmd := exec.Command(bash, "-c", fmt.Sprintf("echo %s >/dev/tcp/%s/%d", token, ap.Addr(), ap.Port()))
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: proxyUID, Gid: proxyUID}}
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("connecting to %s as uid %d: %v\n%s", addr, proxyUID, err, out)
			}
			return nil
		}
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = fmt.Fprintln(c, token)
		return err
	})
	select {
	case a := <-arrivals:
		if a.token != token {
			t.Fatalf("the connection to %s read %q, want %q", addr, a.token, token)
		}
		return a
	case <-time.After(10 * time.Second):
		t.Fatalf("a connection to %s reached no listener in 10s", addr)
		return arrival{}
	}
}

// inNS runs f in the network namespace ns and fails the test if it fails.
func inNS(t *testing.T, ns string, f func() error) {
	t.Helper()
	if err := testenv.InNetns(ns, f); err != nil {
		t.Fatal(err)
	}
}
