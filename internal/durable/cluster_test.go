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
// without one cannot be re-sent safely: its caller gets UNAVAILABLE. Then, with two nodes of
// three killed, a call is bounded by its route's timeout.
func TestClusterFailover(t *testing.T) {
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
		restate.NewService("rgtest.v1.Plain", restate.WithProto).Handler("Add", restate.NewServiceHandler(slow)).
			Handler("Status", restate.NewServiceHandler(func(ctx restate.Context, req *testpb.Req) (*testpb.Resp, error) {
				return &testpb.Resp{Text: "status"}, nil
			})))
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
    - {match: rgtest.v1.Flow/Status, service: rgtest.v1.Plain, timeout: 2s}
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
		t.Fatal(err)
	}

	// Two nodes of three down: the cluster has lost its quorum, and the survivor takes calls
	// that hang while its health endpoints say 200. A caller without a deadline is answered
	// at the route's timeout, told that the cluster lost its quorum.
	if r, err := plainOut.flow.Status(ctx, &testpb.Req{Text: "before"}); err != nil || r.GetText() != "status" {
		t.Fatalf("call with every node up = %v, %v", r, err)
	}
	c.Nodes[0].Kill()
	c.Nodes[2].Kill()
	start := time.Now()
	_, err = plainOut.flow.Status(context.Background(), &testpb.Req{Text: "no quorum"})
	took := time.Since(start)
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "only 1 of the 3 Restate nodes answer: the cluster has lost its quorum") {
		t.Errorf("call without quorum = %v, want UNAVAILABLE that says 1 of 3 nodes answer", err)
	}
	if took < 2*time.Second || took > 4*time.Second {
		t.Errorf("call without quorum answered after %s, want the route's timeout of 2s", took.Round(time.Millisecond))
	}
}
