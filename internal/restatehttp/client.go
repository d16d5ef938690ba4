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
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/rawsock"
)

// ContentType is the content type of every payload: protobuf bytes, as sdk-go's WithProto codec
// and protoc-gen-go-restate services advertise them.
const ContentType = "application/proto"

// Client calls one Restate ingress.
type Client struct {
	base  string
	hc    *http.Client
	token *tokenSource // the bearer token sent with every request
	limit int64
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
}

// NewClient returns a client of the ingress at baseURL (http://host:8080).
func NewClient(baseURL string, o Options) (*Client, error) {
	if err := config.CheckBaseURL(baseURL); err != nil {
		return nil, fmt.Errorf("restate URL: %w", err)
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
	tok, err := newTokenSource(o.BearerToken, o.BearerTokenFile, log)
	if err != nil {
		return nil, err
	}
	limit := int64(o.MaxResponseBytes)
	if limit <= 0 {
		limit = 4 << 20
	}
	return &Client{base: strings.TrimSuffix(baseURL, "/"), hc: hc, token: tok, limit: limit}, nil
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+p, bytes.NewReader(inv.Body))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "building ingress request for %s: %v", inv.Target, err)
	}
	for k, vs := range inv.Header {
		req.Header[k] = vs
	}
	c.token.authorize(req.Header)
	req.Header.Set("Content-Type", or(inv.ContentType, ContentType))
	if inv.IdempotencyKey != "" {
		req.Header.Set("Idempotency-Key", inv.IdempotencyKey)
	}
	if err := c.checkHeader(req, inv); err != nil {
		return nil, err
	}
	resp, body, err := c.do(req)
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
	return nil, &CallError{InvocationID: id, st: StatusFromResponse(resp.StatusCode, body)}
}

// CallError is Restate's answer to a call that failed, with the invocation it names (empty
// when Restate named none), so that the failure can be logged against its invocation.
type CallError struct {
	InvocationID string
	st           *status.Status
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

// do sends req and reads the whole body, bounded. Transport failures are UNAVAILABLE: the
// ingress may come back, and a caller with an idempotency key may safely retry.
func (c *Client) do(req *http.Request) (*http.Response, []byte, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, nil, status.FromContextError(ctxErr).Err()
		}
		var certErr *tls.CertificateVerificationError
		if errors.As(err, &certErr) {
			// Not a passing fault: retrying will not make the certificate trusted.
			return nil, nil, status.Errorf(codes.Unavailable, "restate at %s has an untrusted certificate (set access.caFile): %v", c.base, unwrapURLError(err))
		}
		return nil, nil, &TransportError{status.Newf(codes.Unavailable, "restate unreachable at %s: %v", c.base, unwrapURLError(err))}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.limit+1))
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, nil, status.FromContextError(ctxErr).Err()
		}
		return nil, nil, &TransportError{status.Newf(codes.Unavailable, "reading restate's answer: %v", err)}
	}
	if int64(len(body)) > c.limit {
		return nil, nil, status.Errorf(codes.ResourceExhausted, "restate response larger than the %d-byte limit", c.limit)
	}
	return resp, body, nil
}

// TransportError is a failure to reach Restate or to read its answer, as opposed to an answer:
// the request may or may not have arrived. It is UNAVAILABLE at the gRPC edge.
type TransportError struct{ st *status.Status }

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
// touches no service, for the sidecar's readiness checks.
func (c *Client) Health(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/restate/health", nil)
	if err != nil {
		return err
	}
	c.token.authorize(req.Header)
	resp, body, err := c.do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("restate ingress at %s answered %d: %s", c.base, resp.StatusCode, truncate(body))
	}
	return nil
}
