package restatehttp

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/rawsock"
)

// ContentType is the content type of every payload: protobuf bytes, as sdk-go's WithProto codec
// and protoc-gen-go-restate services advertise them.
const ContentType = "application/proto"

// Client calls a Restate ingress: one node's, or a cluster's (NewClusterClient), spreading
// requests over the nodes that answer.
type Client struct {
	nodes  *pool
	token  *tokenSource // the bearer token sent with every request
	limit  int64
	health string // the path of the health endpoint, which probes a node back into service
}

// Options configure a Client. The zero value is usable.
type Options struct {
	// HTTPClient carries the requests; default a pooled HTTP/1.1 client.
	HTTPClient *http.Client
	// BearerToken, when set, is sent as "authorization: Bearer <token>".
	BearerToken string
	// BearerTokenFile holds the token instead; it is read again when it changes (at most
	// every TokenRecheck), as Kubernetes rotates projected tokens.
	BearerTokenFile string
	// Logger logs a failed re-read of BearerTokenFile; default slog.Default().
	Logger *slog.Logger
	// CAFile is a PEM bundle trusted for https URLs besides the system's roots.
	CAFile string
	// MaxResponseBytes bounds a response body; default 4 MiB.
	MaxResponseBytes int
	// Resolver looks up a URL's host name; a name with several addresses (a headless Service)
	// is a node per address. Default net.DefaultResolver.LookupHost; tests hook it.
	Resolver func(ctx context.Context, host string) ([]string, error)
	// ResolveInterval is how often host names are looked up again; default
	// DefaultResolveInterval.
	ResolveInterval time.Duration
}

// NewClient returns a client of the ingress at baseURL (http://host:8080).
func NewClient(baseURL string, o Options) (*Client, error) {
	return NewClusterClient([]string{baseURL}, o)
}

// NewClusterClient returns a client of the ingresses of a Restate cluster's nodes, at urls:
// one per node, or a name that resolves to every node.
func NewClusterClient(urls []string, o Options) (*Client, error) {
	return newClient(urls, o, "/restate/health")
}

func newClient(urls []string, o Options, health string) (*Client, error) {
	for _, u := range urls {
		if err := config.CheckBaseURL(u); err != nil {
			return nil, fmt.Errorf("restate URL: %w", err)
		}
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = DefaultHTTPClient()
	}
	if o.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", o.CAFile)
		}
		t := hc.Transport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		hc = &http.Client{Transport: t}
	}
	if o.BearerToken != "" && o.BearerTokenFile != "" {
		return nil, errors.New("set a bearer token or a bearer token file, not both")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	o.Logger = log
	tok, err := newTokenSource(o.BearerToken, o.BearerTokenFile, log)
	if err != nil {
		return nil, err
	}
	limit := int64(o.MaxResponseBytes)
	if limit <= 0 {
		limit = 4 << 20
	}
	nodes, err := newPool(urls, hc, o)
	if err != nil {
		return nil, err
	}
	c := &Client{nodes: nodes, token: tok, limit: limit, health: health}
	nodes.probe = c.probe
	return c, nil
}

// DefaultHTTPClient is an HTTP/1.1 client whose idle pool fits a busy sidecar: every waiting
// call holds one connection, so the pool must not be the bottleneck. Its connections are
// rawsock's, dialed with http.DefaultTransport's timeouts.
func DefaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&rawsock.Dialer{Dialer: net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}}).DialContext
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 512
	t.IdleConnTimeout = 90 * time.Second
	return &http.Client{Transport: t}
}

// Target names the handler an invocation runs.
type Target struct {
	Service string
	// Key is the object key or workflow id; Keyed says the target has one (it may be empty).
	Key     string
	Keyed   bool
	Handler string
}

func (t Target) String() string {
	if t.Keyed {
		return t.Service + "/" + t.Key + "/" + t.Handler
	}
	return t.Service + "/" + t.Handler
}

// path is the ingress path of t; the key is escaped, since Restate URL-decodes it.
func (t Target) path() string {
	if t.Keyed {
		return "/" + t.Service + "/" + url.PathEscape(t.Key) + "/" + t.Handler
	}
	return "/" + t.Service + "/" + t.Handler
}

// Invocation is one call or send.
type Invocation struct {
	Target         Target
	Send           bool
	Delay          time.Duration // sends only
	IdempotencyKey string
	Header         http.Header // forwarded caller metadata; stored by Restate in the journal
	Body           []byte
	// ContentType of Body; default application/proto.
	ContentType string
}

// Result is what Restate answered.
type Result struct {
	InvocationID string
	// Status is Completed for a call, Accepted or PreviouslyAccepted for a send.
	Status string
	Body   []byte
}

// Invoke runs inv and returns its result. Every error is a gRPC status error.
func (c *Client) Invoke(ctx context.Context, inv Invocation) (*Result, error) {
	p := inv.Target.path()
	if inv.Send {
		p += "/send"
		if inv.Delay > 0 {
			p += fmt.Sprintf("?delay=%dms", inv.Delay.Milliseconds()) // as sdk-go sends it
		}
	}
	header := http.Header{}
	for k, vs := range inv.Header {
		header[k] = vs
	}
	c.token.authorize(header)
	header.Set("Content-Type", or(inv.ContentType, ContentType))
	if inv.IdempotencyKey != "" {
		header.Set("Idempotency-Key", inv.IdempotencyKey)
	}
	// The header block is about the same on every node: measured against the first.
	sized, err := http.NewRequest(http.MethodPost, c.nodes.seeds[0].String()+p, nil)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "building ingress request for %s: %v", inv.Target, err)
	}
	sized.Header = header
	if err := c.checkHeader(sized, inv); err != nil {
		return nil, err
	}
	// With an idempotency key Restate answers a repeated call from the invocation it has, so
	// a call whose connection broke may go to another node; without one it might run twice.
	resp, body, err := c.roundTrip(ctx, request{method: http.MethodPost, path: p, header: header, body: inv.Body,
		replayable: inv.IdempotencyKey != "", unready: serviceUnknown})
	if err != nil {
		return nil, err
	}
	id := resp.Header.Get("X-Restate-Id")
	switch {
	case resp.StatusCode == http.StatusOK && !inv.Send:
		return &Result{InvocationID: id, Status: "Completed", Body: body}, nil
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusAccepted:
		var sr struct {
			InvocationID string `json:"invocationId"`
			Status       string `json:"status"`
		}
		if err := json.Unmarshal(body, &sr); err != nil {
			return nil, status.Errorf(codes.Internal, "restate: unreadable send response %q: %v", body, err)
		}
		return &Result{InvocationID: or(sr.InvocationID, id), Status: sr.Status}, nil
	}
	return nil, &CallError{InvocationID: id, HTTPStatus: resp.StatusCode, st: StatusFromResponse(resp.StatusCode, body), RetryAfter: retryAfter(resp, body)}
}

// CallError is Restate's answer to a call that failed, with the invocation it names (empty
// when Restate named none), so that the failure can be logged against its invocation.
type CallError struct {
	InvocationID string
	HTTPStatus   int // Restate's answer
	// RetryAfter, when positive, is how long Restate asked callers to wait before they try
	// again (it shed the call), for grpc-retry-pushback-ms.
	RetryAfter time.Duration
	st         *status.Status
}

func (e *CallError) Error() string              { return e.st.Err().Error() }
func (e *CallError) GRPCStatus() *status.Status { return e.st }

// Restate's ingress limits on a request's header block, found by trying 1.7.12. Past them it
// answers 431 with no body, or closes the connection while the request is still being written
// (which the client sees as a broken pipe), so the client refuses such requests itself.
const (
	// MaxHeaderFields: its HTTP/1.1 server reads at most 100 header fields, the client's own
	// (Host, User-Agent, Content-Length, Accept-Encoding, Content-Type, ...) included.
	MaxHeaderFields = 100
	// MaxHeaderBytes: its HTTP/1.1 server takes about 425 KiB of request head (one header
	// value of 434,842 bytes passed, 500,000 did not); 400 KiB of header fields
	// (name: value CRLF) stays clear of it.
	MaxHeaderBytes = 400 << 10
	// MaxHeaderListHTTP2: over HTTP/2 (https, where ALPN may choose it) it takes a header list
	// of 16 KiB, counted as RFC 9113 counts it (name + value + 32 per field, pseudo-headers too).
	MaxHeaderListHTTP2 = 16 << 10
)

// implicitFields are the fields Go's client adds to a request: Host, User-Agent,
// Content-Length and Accept-Encoding.
const implicitFields = 4

// checkHeader refuses a request whose header block Restate's ingress would refuse, before it is
// sent: RESOURCE_EXHAUSTED, naming the limit.
func (c *Client) checkHeader(req *http.Request, inv Invocation) error {
	caller := 0
	for _, vs := range inv.Header {
		caller += len(vs)
	}
	fields := implicitFields
	h1 := len(req.URL.RequestURI()) + len(req.Host) + len(req.URL.Host) + 80 // the implicit fields, the request line
	h2 := len(req.URL.RequestURI()) + len(req.URL.Host) + 4*32 + 32 + 80     // pseudo-headers, the implicit fields
	for k, vs := range req.Header {
		for _, v := range vs {
			fields++
			h1 += len(k) + len(v) + 4
			h2 += len(k) + len(v) + 32
		}
	}
	switch {
	case fields > MaxHeaderFields:
		return status.Errorf(codes.ResourceExhausted, "%s: the call's %d metadata entries and the sidecar's own %d header fields make %d on the request to Restate's ingress, which takes at most %d: send fewer metadata entries", inv.Target, caller, fields-caller, fields, MaxHeaderFields)
	case h1 > MaxHeaderBytes:
		return status.Errorf(codes.ResourceExhausted, "%s: the call's metadata makes a header block of about %d bytes on the request to Restate's ingress, which takes at most %d: send less metadata", inv.Target, h1, MaxHeaderBytes)
	case req.URL.Scheme == "https" && h2 > MaxHeaderListHTTP2:
		return status.Errorf(codes.ResourceExhausted, "%s: the call's metadata makes a header list of about %d bytes on the request to Restate's ingress, which takes at most %d over HTTP/2: send less metadata", inv.Target, h2, MaxHeaderListHTTP2)
	}
	return nil
}

// request is one request to Restate, to be sent to one node after another.
type request struct {
	method, path string
	header       http.Header
	body         []byte
	// replayable says the request may be sent again to another node after its connection
	// broke: reads, and calls Restate dedupes. Any request may go on when the connection to a
	// node could not be made.
	replayable bool
	// unready, when set, tells an answer of a node not ready for the request: the next node
	// is asked, and that one is taken out if another answers. When all say so, the first
	// answer is the result.
	unready func(resp *http.Response, body []byte) bool
}

// roundTrip sends r to the nodes in turn until one answers, and reads the whole answer,
// bounded. Transport failures are UNAVAILABLE: the node may come back, and a caller with an
// idempotency key may safely retry.
func (c *Client) roundTrip(ctx context.Context, r request) (*http.Response, []byte, error) {
	var (
		lastErr   *TransportError
		unready   []*node
		firstResp *http.Response
		firstBody []byte
		failed    int
	)
	nodes := c.nodes.order()
	for _, n := range nodes {
		req, err := http.NewRequestWithContext(ctx, r.method, n.base+r.path, bytes.NewReader(r.body))
		if err != nil {
			return nil, nil, status.Errorf(codes.Internal, "building request: %v", err)
		}
		if r.body == nil {
			req.Body, req.GetBody, req.ContentLength = nil, nil, 0
		}
		for k, vs := range r.header {
			req.Header[k] = vs
		}
		if n.host != "" {
			req.Host = n.host
		}
		resp, body, err := c.do(n, req)
		if err != nil {
			var te *TransportError
			if !errors.As(err, &te) {
				return nil, nil, err
			}
			c.nodes.failed(n, te.cause)
			lastErr, failed = te, failed+1
			if r.replayable || te.notSent {
				continue
			}
			return nil, nil, err
		}
		if r.unready != nil && r.unready(resp, body) {
			if firstResp == nil {
				firstResp, firstBody = resp, body
			}
			unready = append(unready, n)
			continue
		}
		c.nodes.ok(n)
		for _, u := range unready {
			c.nodes.failed(u, fmt.Errorf("answered HTTP %d %s where %s answered", firstResp.StatusCode, truncate(firstBody), n.base))
		}
		return resp, body, nil
	}
	if firstResp != nil {
		return firstResp, firstBody, nil
	}
	if failed > 1 {
		return nil, nil, &TransportError{st: status.Newf(codes.Unavailable, "restate unreachable: none of its %d nodes answered; the last, %s", failed, lastErr.st.Message()), cause: lastErr.cause, notSent: lastErr.notSent}
	}
	return nil, nil, lastErr
}

// do sends req to node n and reads the whole body, bounded.
func (c *Client) do(n *node, req *http.Request) (*http.Response, []byte, error) {
	resp, err := n.hc.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, nil, status.FromContextError(ctxErr).Err()
		}
		var certErr *tls.CertificateVerificationError
		if errors.As(err, &certErr) {
			// Not a passing fault: retrying will not make the certificate trusted.
			return nil, nil, status.Errorf(codes.Unavailable, "restate at %s has an untrusted certificate (set access.caFile): %v", n.base, unwrapURLError(err))
		}
		return nil, nil, &TransportError{st: status.Newf(codes.Unavailable, "restate unreachable at %s: %v", c.nodes.describe(n), unwrapURLError(err)), cause: err, notSent: notSent(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.limit+1))
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, nil, status.FromContextError(ctxErr).Err()
		}
		return nil, nil, &TransportError{st: status.Newf(codes.Unavailable, "reading the answer of restate at %s: %v", c.nodes.describe(n), err), cause: err}
	}
	if int64(len(body)) > c.limit {
		return nil, nil, status.Errorf(codes.ResourceExhausted, "restate response larger than the %d-byte limit", c.limit)
	}
	return resp, body, nil
}

// probe asks node n's health endpoint whether it serves again.
func (c *Client) probe(ctx context.Context, n *node) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.base+c.health, nil)
	if err != nil {
		return err
	}
	if n.host != "" {
		req.Host = n.host
	}
	c.token.authorize(req.Header)
	resp, _, err := c.do(n, req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d", c.health, resp.StatusCode)
	}
	return nil
}

// Nodes asks every node's health endpoint at once and says how many answered, of all the
// nodes known; those that did not are taken out of service. A call that meets its timeout
// while most nodes are silent met a cluster that has lost its quorum, not a slow handler.
func (c *Client) Nodes(ctx context.Context) (answering, all int) {
	nodes := c.nodes.all()
	var wg sync.WaitGroup
	var ok atomic.Int32
	for _, n := range nodes {
		wg.Go(func() {
			if err := c.probe(ctx, n); err != nil {
				c.nodes.failed(n, err)
				return
			}
			ok.Add(1)
		})
	}
	wg.Wait()
	return int(ok.Load()), len(nodes)
}

// TransportError is a failure to reach Restate or to read its answer, as opposed to an answer:
// the request may or may not have arrived. It is UNAVAILABLE at the gRPC edge.
type TransportError struct {
	st      *status.Status
	cause   error
	notSent bool // the connection was never made: the request did not arrive
}

func (e *TransportError) Error() string              { return e.st.Message() }
func (e *TransportError) GRPCStatus() *status.Status { return e.st }

// IsTransport reports whether err is a TransportError.
func IsTransport(err error) bool {
	var te *TransportError
	return errors.As(err, &te)
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Health asks the ingress whether it serves (GET /restate/health): a cheap request that
// touches no service, for the sidecar's readiness checks. Of a cluster, one node that serves
// is enough.
func (c *Client) Health(ctx context.Context) error {
	h := http.Header{}
	c.token.authorize(h)
	resp, body, err := c.roundTrip(ctx, request{method: http.MethodGet, path: c.health, header: h, replayable: true,
		unready: func(resp *http.Response, _ []byte) bool { return resp.StatusCode != http.StatusOK }})
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("restate at %s answered %d: %s", c.nodes.seeds[0], resp.StatusCode, truncate(body))
	}
	return nil
}
