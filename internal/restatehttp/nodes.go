package restatehttp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Bounds of taking a failed node out: it is out for downBase after its first failure, twice as
// long after each further one, at most downMax, and comes back when a probe of its health
// endpoint passes.
const (
	downBase     = 500 * time.Millisecond
	downMax      = 15 * time.Second
	probeTimeout = 2 * time.Second
	// DefaultResolveInterval is how often a host name is looked up again, for the nodes of a
	// headless Service that come and go.
	DefaultResolveInterval = 10 * time.Second
	resolveTimeout         = 5 * time.Second
	// maxNodes bounds the nodes one name may expand to: DNS is a peer too.
	maxNodes = 64
)

// pool is the Restate nodes a client calls: one per configured URL, except that a URL whose
// host name resolves to several addresses (a Kubernetes headless Service) is one node per
// address, looked up again every resolve interval. Calls go round the nodes that answer; a
// node that fails is taken out and probed back with a bounded backoff.
type pool struct {
	seeds   []*url.URL
	hc      *http.Client
	resolve func(ctx context.Context, host string) ([]string, error)
	every   time.Duration
	probe   func(ctx context.Context, n *node) error // set by the client: its health check
	log     *slog.Logger
	names   bool // some seed has a host name

	first     sync.Once // the first lookup
	mu        sync.Mutex
	nodes     []*node
	next      int
	resolved  time.Time // when the names were last looked up
	resolving bool
	tlsByHost map[string]*http.Client
}

// node is one Restate node's API (ingress or admin).
type node struct {
	base string       // scheme://host:port, the URL requests go to
	host string       // the Host header, when base holds an address of a name; else ""
	hc   *http.Client // carries its requests (TLS names the host, not the address)

	// Guarded by pool.mu.
	fails     int       // consecutive failures
	downUntil time.Time // out until then, and then until a probe passes
	probing   bool
}

func (n *node) String() string { return n.base }

// nodeAddr is where a node is: its URL, and the Host header when the URL holds an address.
type nodeAddr struct{ base, host string }

func newPool(urls []string, hc *http.Client, o Options) (*pool, error) {
	if len(urls) == 0 {
		return nil, errors.New("no Restate URL")
	}
	p := &pool{hc: hc, resolve: o.Resolver, every: o.ResolveInterval, log: o.Logger, tlsByHost: map[string]*http.Client{}}
	if p.resolve == nil {
		p.resolve = net.DefaultResolver.LookupHost
	}
	if p.every <= 0 {
		p.every = DefaultResolveInterval
	}
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return nil, err
		}
		u.Path, u.RawPath = "", ""
		p.seeds = append(p.seeds, u)
		p.names = p.names || net.ParseIP(u.Hostname()) == nil
		p.nodes = append(p.nodes, &node{base: u.String(), hc: hc})
	}
	return p, nil
}

// order is the nodes to try for one request: those in service, starting at the next in turn,
// then those out of service, the one due back soonest first, as a last resort. It starts
// probes of nodes due back and a new lookup of the names when one is due.
func (p *pool) order() []*node {
	if p.names {
		// The first request waits for the names: one may resolve only to the nodes.
		p.first.Do(p.lookup)
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.resolving && now.Sub(p.resolved) >= p.every && p.names {
		p.resolving = true
		go p.lookup()
	}
	var up, down []*node
	for i := range p.nodes {
		n := p.nodes[(p.next+i)%len(p.nodes)]
		switch {
		case n.downUntil.IsZero():
			up = append(up, n)
		default:
			if !n.probing && now.After(n.downUntil) {
				n.probing = true
				go p.probeBack(n)
			}
			down = append(down, n)
		}
	}
	p.next++
	slices.SortStableFunc(down, func(a, b *node) int { return a.downUntil.Compare(b.downUntil) })
	return append(up, down...)
}

// failed takes n out of service after a failure: for downBase, doubling with each failure in a
// row, at most downMax. A failed node may have moved (a restarted pod has a new address):
// the names are looked up again at the next request.
func (p *pool) failed(n *node, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n.fails++
	n.downUntil = time.Now().Add(backoff(n.fails))
	p.resolved = time.Time{}
	if n.fails == 1 {
		p.log.Warn("restate node out of service", "node", n.base, "error", err, "nodes", len(p.nodes))
	}
}

// all is every node known now.
func (p *pool) all() []*node {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.nodes)
}

// ok records that n answered.
func (p *pool) ok(n *node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.upLocked(n)
}

func (p *pool) upLocked(n *node) {
	if n.fails > 0 {
		p.log.Info("restate node back in service", "node", n.base, "after failures", n.fails)
	}
	n.fails, n.downUntil = 0, time.Time{}
}

func backoff(fails int) time.Duration {
	d := downBase
	for i := 1; i < fails && d < downMax; i++ {
		d *= 2
	}
	return min(d, downMax)
}

// probeBack checks a node due back: it returns to service when its health endpoint answers,
// else it stays out for longer.
func (p *pool) probeBack(n *node) {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	err := p.probe(ctx, n)
	p.mu.Lock()
	defer p.mu.Unlock()
	n.probing = false
	if err == nil {
		p.upLocked(n)
		return
	}
	n.fails++
	n.downUntil = time.Now().Add(backoff(n.fails))
}

// lookup resolves the seeds' host names and rebuilds the node list: a name with several
// addresses becomes a node per address, one with a single address (or that does not resolve)
// stays one node under its name, as before clusters. Nodes that stay keep their state.
func (p *pool) lookup() {
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	var wants []nodeAddr
	for _, u := range p.seeds {
		name := u.Hostname()
		var addrs []string
		if net.ParseIP(name) == nil {
			var err error
			if addrs, err = p.resolve(ctx, name); err != nil {
				p.log.Debug("restate host name not resolved; calling it by name", "host", name, "error", err)
			}
		}
		slices.Sort(addrs)
		addrs = slices.Compact(addrs)
		// A name with IPv4 and IPv6 addresses (localhost; a dual-stack pod) is one node per
		// IPv4 address, not two nodes for one server, of which one may not listen.
		if v4 := slices.DeleteFunc(slices.Clone(addrs), func(a string) bool { ip := net.ParseIP(a); return ip == nil || ip.To4() == nil }); len(v4) > 0 {
			addrs = v4
		}
		if len(addrs) > maxNodes {
			addrs = addrs[:maxNodes]
		}
		if len(addrs) < 2 {
			wants = append(wants, nodeAddr{base: u.String()})
			continue
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		for _, a := range addrs {
			v := *u
			v.Host = net.JoinHostPort(a, port)
			wants = append(wants, nodeAddr{base: v.String(), host: u.Host})
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resolving = false
	p.resolved = time.Now()
	old := map[nodeAddr]*node{}
	for _, n := range p.nodes {
		old[nodeAddr{n.base, n.host}] = n
	}
	nodes := make([]*node, 0, len(wants))
	for _, w := range wants {
		if n, ok := old[w]; ok {
			nodes = append(nodes, n)
			continue
		}
		nodes = append(nodes, &node{base: w.base, host: w.host, hc: p.clientFor(w)})
	}
	if len(nodes) != len(p.nodes) {
		p.log.Info("restate nodes", "count", len(nodes), "was", len(p.nodes))
	}
	p.nodes = nodes
}

// clientFor is the HTTP client of a node at an address of a name: over https its certificate
// is checked against the name, so each name has a transport of its own.
func (p *pool) clientFor(w nodeAddr) *http.Client {
	u, err := url.Parse(w.base)
	if w.host == "" || err != nil || u.Scheme != "https" {
		return p.hc
	}
	host, _, err := net.SplitHostPort(w.host)
	if err != nil {
		host = w.host
	}
	if c, ok := p.tlsByHost[host]; ok {
		return c
	}
	t, ok := p.hc.Transport.(*http.Transport)
	if !ok {
		return p.hc
	}
	t = t.Clone()
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	t.TLSClientConfig.ServerName = host
	c := &http.Client{Transport: t}
	p.tlsByHost[host] = c
	return c
}

// notSent reports whether a transport error happened before the request left: the
// connection was never made. Such a request can go to another node whatever it is.
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns) || errors.Is(err, syscall.ECONNREFUSED)
}

// describe says which node failed, among how many.
func (p *pool) describe(n *node) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.nodes) == 1 {
		return n.base
	}
	return fmt.Sprintf("%s (one of %d nodes)", n.base, len(p.nodes))
}
