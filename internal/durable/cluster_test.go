package durable

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	restate "github.com/restatedev/sdk-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
	"github.com/restate-grpc/restate-grpc/internal/testenv"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// TestClusterAutoKeyFailover: SIGKILL of the Restate node that holds two durable calls'
// connections, on a real 3-node cluster. The call of a route with autoIdempotencyKey carries
// the sidecar's own key, so it is re-issued on another node and attached to the invocation
// already running: its caller gets the answer, and one invocation ran. The call of a route
// without one cannot be re-sent safely: its caller gets UNAVAILABLE.
func TestClusterAutoKeyFailover(t *testing.T) {
	c, err := testenv.StartCluster(t.TempDir(), testenv.ClusterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	var mu sync.Mutex
	ids := map[string]map[string]bool{} // request text -> invocation ids
	slow := func(ctx restate.Context, req *testpb.Req) (*testpb.Resp, error) {
		mu.Lock()
		if ids[req.Text] == nil {
			ids[req.Text] = map[string]bool{}
		}
		ids[req.Text][ctx.Request().ID] = true
		mu.Unlock()
		if err := restate.Sleep(ctx, 4*time.Second); err != nil {
			return nil, err
		}
		return &testpb.Resp{Text: "slept " + req.Text}, nil
	}
	invocations := func(text string) int {
		mu.Lock()
		defer mu.Unlock()
		return len(ids[text])
	}
	uri, stop, err := testenv.ServeSDK(
		restate.NewService("rgtest.v1.Echo", restate.WithProto).Handler("Call", restate.NewServiceHandler(slow)),
		restate.NewService("rgtest.v1.Plain", restate.WithProto).Handler("Add", restate.NewServiceHandler(slow)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	if err := c.Register(ctx, uri, "rgtest.v1.Echo", "rgtest.v1.Plain"); err != nil {
		t.Fatal(err)
	}

	victim := c.Nodes[1]
	// A new client's first call goes to its first node: the victim. One outbound server per
	// call, so that each call's first node is the victim.
	urls := []string{victim.Ingress, c.Nodes[2].Ingress, c.Nodes[0].Ingress}
	outbound := func() *outbound {
		cfg, err := config.Parse([]byte("outbound:\n  ingress: [" + strings.Join(urls, ", ") + `]
  routes:
    - {match: rgtest.v1.Echo/*, autoIdempotencyKey: true}
    - {match: rgtest.v1.Counter/*, service: rgtest.v1.Plain}
`))
		if err != nil {
			t.Fatal(err)
		}
		cl, err := restatehttp.NewClusterClient(cfg.Outbound.Ingress, restatehttp.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return serve(t, Options{Config: cfg.Outbound, Ingress: cl, Logger: slog.New(slog.DiscardHandler)})
	}
	type answer struct {
		resp *testpb.Resp
		err  error
	}
	auto, plain := make(chan answer, 1), make(chan answer, 1)
	autoOut, plainOut := outbound(), outbound()
	go func() {
		r, err := autoOut.echo.Call(ctx, &testpb.Req{Text: "auto"})
		auto <- answer{r, err}
	}()
	go func() {
		r, err := plainOut.counter.Add(ctx, &testpb.Req{Text: "plain"})
		plain <- answer{r, err}
	}()
	for invocations("auto") == 0 || invocations("plain") == 0 {
		if ctx.Err() != nil {
			t.Fatal("the calls never reached the app")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(auto) > 0 || len(plain) > 0 {
		t.Fatal("a call was answered before its node was killed: the test shows nothing")
	}
	victim.Kill()
	a := <-auto
	if a.err != nil || a.resp.GetText() != "slept auto" {
		t.Errorf("auto-keyed call with its node killed = %v, %v; want its answer", a.resp, a.err)
	}
	if n := invocations("auto"); n != 1 {
		t.Errorf("auto-keyed call ran as %d invocations, want 1", n)
	}
	p := <-plain
	if status.Code(p.err) != codes.Unavailable {
		t.Errorf("call without a key with its node killed = %v, %v; want UNAVAILABLE", p.resp, p.err)
	}
	if err := victim.Restart(); err != nil {
		t.Error(err)
	}
}
