package sidecar_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/sidecar"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// start runs a sidecar with an outbound side configured by yaml, and a health listener, whose
// address it returns too.
func start(t *testing.T, yaml string) (*sidecar.Sidecar, string) {
	t.Helper()
	c, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	health := listen(t)
	s, err := sidecar.Start(ctx, sidecar.Options{
		Config:    c,
		Listeners: sidecar.Listeners{Outbound: listen(t), Health: health},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); s.Wait() })
	return s, health.Addr().String()
}

// connect sends a CONNECT for target to addr and returns the answer and the tunnel. The
// listener sends nothing after a 200 until the client speaks, so br holds no tunnel bytes
// that a caller reading c would miss.
func connect(addr, target string) (*http.Response, net.Conn, *bufio.Reader, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, nil, err
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		c.Close()
		return nil, nil, nil, fmt.Errorf("CONNECT %s: %w", target, err)
	}
	return resp, c, br, nil
}

// TestOutboundConnect: the outbound listener takes CONNECT (proxy-env mode) with the
// configured policy: the sidecar's other listeners and targets outside allowDestinations are
// refused, others are tunneled.
func TestOutboundConnect(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "web") }))
	defer web.Close()
	s, health := start(t, `
outbound:
  listen: 127.0.0.1:0
  allowDestinations: [127.0.0.1/32]
`)
	out := s.OutboundAddr().String()
	for _, tc := range []struct {
		target, want string
	}{
		{health, "403 Forbidden: CONNECT " + health + ": that is one of the sidecar's own listeners"},
		{"orders.test:50051", "403 Forbidden: CONNECT orders.test:50051: not an allowed destination"},
		{web.Listener.Addr().String(), "200 Connection established: "},
	} {
		resp, c, _, err := connect(out, tc.target)
		if err != nil {
			t.Fatal(err)
		}
		var body []byte
		if resp.StatusCode != http.StatusOK { // a 200's body is the tunnel
			body, _ = io.ReadAll(resp.Body)
		}
		c.Close()
		if got := resp.Status + ": " + strings.TrimSpace(string(body)); got != tc.want {
			t.Errorf("CONNECT %s = %q, want %q", tc.target, got, tc.want)
		}
	}
	_, c, br, err := connect(out, web.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: web\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := io.ReadAll(resp.Body); string(body) != "web" {
		t.Errorf("GET through CONNECT = %q, want %q", body, "web")
	}
}

// TestOutboundDestination: an unmatched gRPC call through CONNECT passes through to the
// CONNECT target, with no upstreams configured.
func TestOutboundDestination(t *testing.T) {
	app := listen(t)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(app)
	defer srv.Stop()
	s, _ := start(t, "outbound: {listen: '127.0.0.1:0'}")
	target := app.Addr().String()
	dial := func(context.Context, string) (net.Conn, error) {
		resp, c, _, err := connect(s.OutboundAddr().String(), target)
		if err == nil && resp.StatusCode != http.StatusOK {
			c.Close()
			err = fmt.Errorf("CONNECT %s: %s", target, resp.Status)
		}
		return c, err
	}
	// The call's :authority names no upstream: only the CONNECT target says where it goes.
	cc, err := grpc.NewClient("passthrough:///orders.invalid:1", grpc.WithContextDialer(dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("Check through CONNECT %s: %v", target, err)
	}
}

// TestOutboundIPv6: an outbound listener on the IPv4 loopback takes the IPv6 loopback at the
// same port too, where iptables mode redirects IPv6 connections.
func TestOutboundIPv6(t *testing.T) {
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Fatalf("no IPv6 loopback, which iptables mode redirects IPv6 to: enable it (sysctl -w net.ipv6.conf.lo.disable_ipv6=0): %v", err)
	} else {
		l.Close()
	}
	c, err := config.Parse([]byte("outbound: {listen: '127.0.0.1:0'}"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := sidecar.Start(ctx, sidecar.Options{Config: c, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	defer func() { cancel(); s.Wait() }()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer web.Close()
	v6 := net.JoinHostPort("::1", fmt.Sprint(s.OutboundAddr().(*net.TCPAddr).Port))
	resp, conn, _, err := connect(v6, web.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("CONNECT through %s: %s, want 200", v6, resp.Status)
	}
}

// TestReadyWhileAppDown: an inbound side whose app is not up yet (its methods come from the
// app's reflection) is not ready, but the outbound listener already serves, and says so on
// /readyz/outbound, which the injector's startup probe asks before the app's containers start.
func TestReadyWhileAppDown(t *testing.T) {
	down := listen(t).Addr().String() // bound, never served: the app does not answer
	_, health := start(t, fmt.Sprintf(`
outbound: {listen: 127.0.0.1:0}
inbound:
  app: %s
  listen: 127.0.0.1:0
  services: [{name: orders.v1.OrderService}]
`, down))
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/readyz", http.StatusServiceUnavailable},
		{"/readyz/outbound", http.StatusOK},
		{"/healthz", http.StatusOK},
	} {
		resp, err := http.Get("http://" + health + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s: got %d, want %d", tc.path, resp.StatusCode, tc.want)
		}
	}
}
