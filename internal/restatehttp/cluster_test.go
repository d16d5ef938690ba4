package restatehttp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	restate "github.com/restatedev/sdk-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

// The cluster tests run against one real 3-node Restate cluster, shared by the package's tests
// (it takes ~8 s to start), its nodes on 127.0.0.1-3 with the same ports, as the pods behind a
// headless Service. A test that kills a node restarts it before it ends.

var shared struct {
	once sync.Once
	dir  string
	uri  string // the deployment's
	c    *testenv.Cluster
	app  *clusterApp
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.c != nil {
		shared.c.Stop()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// clusterApp is the deployment: rgtest.Cluster, whose handlers record the invocation ids
// they run, by input.
type clusterApp struct {
	mu  sync.Mutex
	ids map[string]map[string]bool // input -> invocation ids
}

func (a *clusterApp) record(ctx restate.Context, in []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ids[string(in)] == nil {
		a.ids[string(in)] = map[string]bool{}
	}
	a.ids[string(in)][ctx.Request().ID] = true
}

// invocations is how many invocations ran for input in.
func (a *clusterApp) invocations(in string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ids[in])
}

// cluster starts the shared cluster and registers rgtest.Cluster with it, once.
func cluster(t *testing.T) (*testenv.Cluster, *clusterApp) {
	t.Helper()
	shared.once.Do(func() {
		if shared.dir, shared.err = os.MkdirTemp("", "restatehttp-cluster-"); shared.err != nil {
			return
		}
		shared.c, shared.err = testenv.StartCluster(shared.dir, testenv.ClusterOptions{SharedPorts: true})
		if shared.err != nil {
			return
		}
		shared.app = &clusterApp{ids: map[string]map[string]bool{}}
		shared.uri, shared.err = serveApp(shared.c, shared.app)
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.c, shared.app
}

func serveApp(c *testenv.Cluster, app *clusterApp) (string, error) {
	svc := restate.NewService("rgtest.Cluster").
		Handler("Echo", restate.NewServiceHandler(func(ctx restate.Context, in []byte) ([]byte, error) {
			app.record(ctx, in)
			return append([]byte("echo "), in...), nil
		}, restate.WithBinary)).
		// Slow sleeps (durably) for the milliseconds its input starts with: "1500 x".
		Handler("Slow", restate.NewServiceHandler(func(ctx restate.Context, in []byte) ([]byte, error) {
			app.record(ctx, in)
			ms, _, _ := strings.Cut(string(in), " ")
			n, err := strconv.Atoi(ms)
			if err != nil {
				return nil, restate.TerminalErrorf("want milliseconds first, got %q", in)
			}
			if err := restate.Sleep(ctx, time.Duration(n)*time.Millisecond); err != nil {
				return nil, err
			}
			return append([]byte("slept "), in...), nil
		}, restate.WithBinary))
	uri, _, err := testenv.ServeSDK(svc) // serves until the test binary ends
	if err != nil {
		return "", err
	}
	admin, err := NewClusterAdmin(c.Admins(), Options{Logger: quiet})
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err = admin.Register(ctx, uri); err != nil {
		return "", err
	}
	// Every node has loaded the schema before a test counts which node answered.
	return uri, c.WaitServices(ctx, "rgtest.Cluster")
}

var quiet = slog.New(slog.DiscardHandler)

// counting counts the requests a client sends to each host:port, health probes apart.
type counting struct {
	mu     sync.Mutex
	calls  map[string]int
	probes map[string]int
	next   http.RoundTripper
}

func newCounting() *counting {
	return &counting{calls: map[string]int{}, probes: map[string]int{}, next: DefaultHTTPClient().Transport}
}

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	if strings.HasSuffix(r.URL.Path, "/health") {
		c.probes[r.URL.Host]++
	} else {
		c.calls[r.URL.Host]++
	}
	c.mu.Unlock()
	return c.next.RoundTrip(r)
}

func (c *counting) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.calls)
	clear(c.probes)
}

func (c *counting) count(host string) (calls, probes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[host], c.probes[host]
}

func hostOf(u string) string { return strings.TrimPrefix(u, "http://") }

func echo(ctx context.Context, c *Client, text, key string) (*Result, error) {
	return c.Invoke(ctx, Invocation{Target: Target{Service: "rgtest.Cluster", Handler: "Echo"},
		Body: []byte(text), ContentType: "application/octet-stream", IdempotencyKey: key})
}

// loopbackResolver answers for name with the addresses of the cluster's first *nodes nodes
// (and ::1, as for localhost), as a headless Service's DNS name does with its ready pods.
func loopbackResolver(name string, c *testenv.Cluster, nodes *atomic.Int32) func(ctx context.Context, host string) ([]string, error) {
	return func(ctx context.Context, host string) ([]string, error) {
		if host != name {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		addrs := []string{"::1"}
		for _, n := range c.Nodes[:nodes.Load()] {
			addrs = append(addrs, strings.Split(hostOf(n.Ingress), ":")[0])
		}
		return addrs, nil
	}
}

// TestClusterName: one URL whose name resolves to the three nodes spreads the calls over all
// of them (over their IPv4 addresses, where the name has IPv6 ones too); a node the name
// resolves to later gets calls once the name is looked up again.
func TestClusterName(t *testing.T) {
	c, _ := cluster(t)
	count := newCounting()
	_, port, _ := net.SplitHostPort(hostOf(c.Nodes[0].Ingress))
	var resolved atomic.Int32
	resolved.Store(2)
	cl, err := NewClusterClient([]string{"http://restate-nodes.test:" + port}, Options{
		HTTPClient: &http.Client{Transport: count}, Logger: quiet,
		Resolver: loopbackResolver("restate-nodes.test", c, &resolved), ResolveInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 4 {
		if _, err := echo(ctx, cl, fmt.Sprint("two ", i), ""); err != nil {
			t.Fatalf("call %d with the name on two nodes: %v", i, err)
		}
	}
	if got, _ := count.count(hostOf(c.Nodes[2].Ingress)); got != 0 {
		t.Fatalf("node %s, not yet in the name, got %d calls", c.Nodes[2].Name, got)
	}
	resolved.Store(3)
	time.Sleep(300 * time.Millisecond) // past the resolve interval: the next call looks it up again
	if _, err := echo(ctx, cl, "look up", ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the lookup is done aside
	count.reset()
	const calls = 30
	for i := range calls {
		res, err := echo(ctx, cl, fmt.Sprint("name ", i), "")
		if err != nil || string(res.Body) != fmt.Sprint("echo name ", i) {
			t.Fatalf("call %d = %v, %v", i, res, err)
		}
	}
	for _, n := range c.Nodes {
		if got, _ := count.count(hostOf(n.Ingress)); got != calls/len(c.Nodes) {
			t.Errorf("node %s got %d calls, want %d of %d (round robin)", n.Name, got, calls/len(c.Nodes), calls)
		}
	}
}

// TestClusterNodeOut: a killed node is taken out after its first refused connection (the
// calls go on through the others, none fails), probed while it is down, and gets calls again
// once it is back.
func TestClusterNodeOut(t *testing.T) {
	c, _ := cluster(t)
	count := newCounting()
	cl, err := NewClusterClient(c.Ingresses(), Options{HTTPClient: &http.Client{Transport: count}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	victim := c.Nodes[1]
	host := hostOf(victim.Ingress)
	victim.Kill()
	t.Cleanup(func() { restart(t, victim) })
	for i := range 12 {
		if _, err := echo(ctx, cl, fmt.Sprint("out ", i), ""); err != nil {
			t.Fatalf("call %d with %s down: %v", i, victim.Name, err)
		}
	}
	if got, _ := count.count(host); got != 1 {
		t.Errorf("killed %s was sent %d calls, want 1 (the one that found it down)", victim.Name, got)
	}
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	before, _ := count.count(host)
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		if _, err := echo(ctx, cl, fmt.Sprint("back ", i), ""); err != nil {
			t.Fatalf("call %d after %s's restart: %v", i, victim.Name, err)
		}
		if got, _ := count.count(host); got > before {
			break
		}
		if time.Now().After(deadline) {
			_, probes := count.count(host)
			t.Fatalf("restarted %s got no call in 30 s (%d probes)", victim.Name, probes)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, probes := count.count(host); probes == 0 {
		t.Errorf("%s came back without a probe", victim.Name)
	}
}

func restart(t *testing.T, n *testenv.ClusterNode) {
	if n.Running() {
		return
	}
	if err := n.Restart(); err != nil {
		t.Errorf("restarting %s: %v", n.Name, err)
	}
}

// TestClusterKilledInFlight: SIGKILL of the node that holds two calls' connections. The call
// with an idempotency key is re-issued on another node, which attaches it to the invocation
// already running: the caller gets its result, and one invocation ran. The call without one is
// not sent again (it may have run): UNAVAILABLE.
func TestClusterKilledInFlight(t *testing.T) {
	c, app := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	victim := c.Nodes[2]
	urls := []string{victim.Ingress, c.Nodes[0].Ingress, c.Nodes[1].Ingress} // the first call of a client goes to the first
	keyedCount, unkeyedCount := newCounting(), newCounting()
	keyed, err := NewClusterClient(urls, Options{HTTPClient: &http.Client{Transport: keyedCount}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	unkeyed, err := NewClusterClient(urls, Options{HTTPClient: &http.Client{Transport: unkeyedCount}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		res *Result
		err error
	}
	slow := func(cl *Client, in, key string) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			res, err := cl.Invoke(ctx, Invocation{Target: Target{Service: "rgtest.Cluster", Handler: "Slow"},
				Body: []byte(in), ContentType: "application/octet-stream", IdempotencyKey: key})
			ch <- answer{res, err}
		}()
		return ch
	}
	keyIn, plainIn := "3000 keyed "+t.Name(), "3000 plain "+t.Name()
	k, p := slow(keyed, keyIn, "k-"+strconv.FormatInt(time.Now().UnixNano(), 36)), slow(unkeyed, plainIn, "")
	for app.invocations(keyIn) == 0 || app.invocations(plainIn) == 0 {
		if ctx.Err() != nil {
			t.Fatal("the slow calls never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(k) > 0 || len(p) > 0 {
		t.Fatal("a call was answered before its node was killed: the test shows nothing")
	}
	victim.Kill()
	t.Cleanup(func() { restart(t, victim) })
	start := time.Now()
	ka := <-k
	if ka.err != nil || string(ka.res.Body) != "slept "+keyIn {
		t.Errorf("keyed call with its node killed = %v, %v; want its result", ka.res, ka.err)
	}
	if n := app.invocations(keyIn); n != 1 {
		t.Errorf("keyed call ran as %d invocations, want 1", n)
	}
	t.Logf("keyed call answered %s after the kill", time.Since(start).Round(time.Millisecond))
	if got, _ := keyedCount.count(hostOf(victim.Ingress)); got != 1 {
		t.Errorf("the keyed call went %d times to the killed node, want 1", got)
	}
	if a, _ := keyedCount.count(hostOf(urls[1])); a != 1 {
		t.Errorf("the keyed call went %d times to the next node, want 1 (re-issued there)", a)
	}
	pa := <-p
	if got, _ := unkeyedCount.count(hostOf(victim.Ingress)); got != 1 {
		t.Errorf("the unkeyed call went %d times to the killed node, want 1", got)
	}
	var te *TransportError
	if !errors.As(pa.err, &te) || status.Code(pa.err) != codes.Unavailable {
		t.Errorf("unkeyed call with its node killed = %v, %v; want UNAVAILABLE, a broken connection, not re-sent", pa.res, pa.err)
	}
}

// TestClusterServiceUnknownNode: a node that answers "service not found" for a service
// another node serves (as a restarted node does until it has loaded the schema) is skipped:
// here a real single Restate server where the service was never registered, in front of the
// cluster. A service no node knows is still UNIMPLEMENTED.
func TestClusterServiceUnknownNode(t *testing.T) {
	c, _ := cluster(t)
	lone, err := testenv.StartRestate(t.TempDir(), testenv.RestateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lone.Stop)
	count := newCounting()
	cl, err := NewClusterClient([]string{lone.Ingress, c.Nodes[0].Ingress}, Options{HTTPClient: &http.Client{Transport: count}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 4 {
		res, err := echo(ctx, cl, fmt.Sprint("unknown ", i), "")
		if err != nil || string(res.Body) != fmt.Sprint("echo unknown ", i) {
			t.Fatalf("call %d = %v, %v; want it answered by the node that knows the service", i, res, err)
		}
	}
	if got, _ := count.count(hostOf(lone.Ingress)); got != 1 {
		t.Errorf("the node without the service was asked %d times, want 1 (then taken out)", got)
	}
	_, err = cl.Invoke(ctx, Invocation{Target: Target{Service: "rgtest.Nowhere", Handler: "Echo"}, ContentType: "application/octet-stream"})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "rgtest.Nowhere") {
		t.Errorf("a service no node knows: %v, want UNIMPLEMENTED naming it", err)
	}
}

// TestClusterAdmin: registration, a query, lookup, attach and cancel work through a list whose first
// node is down (nothing listens there: a dead node's refused connection).
func TestClusterAdmin(t *testing.T) {
	c, _ := cluster(t)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("http://127.0.0.1:%d", port)
	admin, err := NewClusterAdmin([]string{dead, c.Nodes[0].Admin}, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rows []struct {
		Name string `json:"name"`
	}
	if err := admin.Query(ctx, "SELECT name FROM sys_service WHERE name = 'rgtest.Cluster'", &rows); err != nil || len(rows) != 1 {
		t.Fatalf("query through a list with a dead node = %v, %v", rows, err)
	}
	// Registering again, through the dead node first, changes nothing: Restate has the URI.
	if d, err := admin.Register(ctx, shared.uri); err != nil || d.Created {
		t.Errorf("registering the deployment again = %+v, %v; want it found, not created", d, err)
	}
	ingr, err := NewClusterClient([]string{dead, c.Nodes[0].Ingress}, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	target := Target{Service: "rgtest.Cluster", Handler: "Slow"}
	key := "admin-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	sent, err := ingr.Invoke(ctx, Invocation{Target: target, Send: true, IdempotencyKey: key, Body: []byte("60000 cancel me"), ContentType: "application/octet-stream"})
	if err != nil {
		t.Fatal(err)
	}
	ref := Ref{Idempotent: &target, Key: key}
	if id, err := ingr.Lookup(ctx, ref); err != nil || id != sent.InvocationID {
		t.Errorf("lookup = %q, %v; want %s", id, err, sent.InvocationID)
	}
	if err := admin.Cancel(ctx, sent.InvocationID); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if _, err := ingr.Attach(ctx, ref); status.Code(err) != codes.Canceled {
		t.Errorf("attach to the cancelled invocation: %v, want CANCELLED", err)
	}
}
