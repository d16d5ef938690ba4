package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Config is the whole sidecar configuration. Either side may be absent: a pod that only calls
// out needs no inbound section, and the other way round.
type Config struct {
	Outbound *Outbound `json:"outbound,omitempty"`
	Inbound  *Inbound  `json:"inbound,omitempty"`
	// LogLevel is debug, info (default), warn or error.
	LogLevel string `json:"logLevel,omitempty"`
	// LogFormat is text (default, slog's key=value) or json (one object a line, for collectors).
	LogFormat string   `json:"logFormat,omitempty"`
	Tracing   *Tracing `json:"tracing,omitempty"`
	Health    Health   `json:"health,omitzero"`
	Shutdown  Shutdown `json:"shutdown,omitzero"`
}

// Health configures what /readyz checks.
type Health struct {
	// RequireIngress, when true, makes an unreachable Restate ingress fail /readyz. Default
	// false, as Istio's and Linkerd's proxies stay ready when a backend is down: an unready
	// caller pod is taken out of its Service and gets no traffic at all, while a ready one can
	// still serve what does not need Restate, and its durable calls fail UNAVAILABLE, which
	// callers retry. The ingress's state is shown either way.
	RequireIngress bool `json:"requireIngress,omitempty"`
	// CheckInterval is how often the app and the ingress are probed; the probe handlers read the
	// last results, so a kubelet probe never waits on them. Default 2s.
	CheckInterval Duration `json:"checkInterval,omitempty"`
}

// Shutdown configures the drain on SIGTERM.
type Shutdown struct {
	// Grace bounds how long calls in flight may finish after SIGTERM. Default 25s: within
	// Kubernetes' default terminationGracePeriodSeconds (30s), with room to exit before the
	// SIGKILL. Set it a few seconds below the pod's terminationGracePeriodSeconds.
	Grace Duration `json:"grace,omitempty"`
}

// Tracing configures the sidecar's own spans. Each field left unset falls back to the standard
// OTEL_* variable, read by the OpenTelemetry SDK (see package tracing); without an endpoint
// from either, no spans are made.
type Tracing struct {
	// OTLPEndpoint is the OTLP collector the spans go to, e.g. http://otel-collector:4317
	// (OTEL_EXPORTER_OTLP_ENDPOINT). Over http/protobuf a URL without a path gets /v1/traces.
	OTLPEndpoint string `json:"otlpEndpoint,omitempty"`
	// Protocol is grpc (default, as Restate's own tracing-endpoint) or http/protobuf
	// (OTEL_EXPORTER_OTLP_PROTOCOL).
	Protocol string `json:"protocol,omitempty"`
	// SamplingRatio is the share of new traces sampled, 0 to 1; a call that comes with a trace
	// context follows its caller's decision (parent-based). Default OTEL_TRACES_SAMPLER, else 1.
	SamplingRatio *float64 `json:"samplingRatio,omitempty"`
	// ServiceName is the spans' service.name; default OTEL_SERVICE_NAME, else
	// restate-grpc-sidecar.
	ServiceName string `json:"serviceName,omitempty"`
}

// The OTLP protocols of Tracing.Protocol.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// Outbound configures the listener that accepts the app's outbound gRPC.
type Outbound struct {
	// Listen is the outbound listener address. Default 127.0.0.1:15001 (loopback: only the pod's
	// own app may call out through it).
	Listen string `json:"listen,omitempty"`
	// Ingress is the Restate ingress URL, e.g. http://restate:8080; for a Restate cluster a
	// list, one URL per node, or one URL whose name resolves to every node (a headless
	// Service): calls spread over the nodes that answer (README "A Restate cluster").
	Ingress URLs `json:"ingress,omitempty"`
	// Admin is the Restate admin API URL, e.g. http://restate:9070: needed to cancel and kill
	// invocations (the management API, onCallerGone: cancel). A list, as Ingress, for a cluster.
	Admin URLs `json:"admin,omitempty"`
	// Access is how the sidecar authenticates to the ingress and the admin API.
	Access Access `json:"access,omitempty"`
	// Unmatched says what happens to a call no route matches: passthrough (default) or reject.
	Unmatched string `json:"unmatched,omitempty"`
	// Upstreams maps where passthrough calls go. A key host:port is a destination (a CONNECT
	// target as the app sent it, e.g. orders:50051, or an original address of iptables mode):
	// calls to it go to the value instead. Any other key is a gRPC service name, for calls
	// that have no destination (explicit mode): a service not listed goes to the call's
	// :authority.
	Upstreams map[string]string `json:"upstreams,omitempty"`
	// DetectTimeout is how long the listener waits for a new connection's first bytes before
	// it takes it for a server-first protocol (SMTP, MySQL, ...) and relays it opaque, when it
	// was redirected or came through CONNECT. Default 500ms.
	DetectTimeout Duration `json:"detectTimeout,omitempty"`
	// AllowDestinations, when set, are the only targets a CONNECT (proxy-env mode) may ask
	// for; any other is refused with 403. Each is host:port, where host is a name glob
	// (*.svc.cluster.local), an IP or a CIDR, and port a number or * for any; or a bare CIDR
	// (10.0.0.0/8, fd00::/8) for any port. A name is matched as the app sent it, not resolved.
	AllowDestinations []string `json:"allowDestinations,omitempty"`
	// MaxMessageBytes bounds request and response messages. Default 4 MiB, as gRPC.
	MaxMessageBytes int `json:"maxMessageBytes,omitempty"`
	// Descriptors is where the request message types come from, needed only by rules that take
	// a key from a field.
	Descriptors Descriptors `json:"descriptors,omitempty"`
	Routes      []Route     `json:"routes,omitempty"`
	// Limits bound what an app connection, an upstream or a flood of calls can make the
	// sidecar hold.
	Limits Limits `json:"limits,omitempty"`
}

// Limits bound the outbound listener against any peer. Zero fields take their defaults.
type Limits struct {
	// MaxConcurrentStreams is advertised to each app connection (SETTINGS_MAX_CONCURRENT_STREAMS);
	// a stream past it is refused (REFUSED_STREAM), which gRPC clients retry. Default 1000.
	MaxConcurrentStreams int `json:"maxConcurrentStreams,omitempty"`
	// MaxHeaderListBytes bounds a header block, as RFC 9113 counts it, from either side;
	// advertised (SETTINGS_MAX_HEADER_LIST_SIZE). Default 60 KiB, as Envoy's.
	MaxHeaderListBytes int `json:"maxHeaderListBytes,omitempty"`
	// MaxDurableCalls bounds the durable calls in flight in the sidecar; past it a call fails
	// at once with RESOURCE_EXHAUSTED. Default 4096.
	MaxDurableCalls int `json:"maxDurableCalls,omitempty"`
	// MaxResetsPerSecond is how many streams an app connection may reset (or have refused)
	// per second, on average over 10 s, before it is closed with GOAWAY ENHANCE_YOUR_CALM
	// (CVE-2023-44487). Default 200.
	MaxResetsPerSecond int `json:"maxResetsPerSecond,omitempty"`
	// PrefaceTimeout bounds how long a new connection may take to send the HTTP/2 preface
	// and its SETTINGS. Default 10s.
	PrefaceTimeout Duration `json:"prefaceTimeout,omitempty"`
	// IdleTimeout closes an app connection (GOAWAY) that has had no stream for this long.
	// Default 5m.
	IdleTimeout Duration `json:"idleTimeout,omitempty"`
	// UpstreamIdleTimeout closes an upstream connection with no stream for this long.
	// Default 1m.
	UpstreamIdleTimeout Duration `json:"upstreamIdleTimeout,omitempty"`
	// KeepaliveInterval is how long an upstream connection may be silent before the sidecar
	// pings it; KeepaliveTimeout how long it waits for the ack before it fails the
	// connection's calls with UNAVAILABLE. Defaults 10s and 5s.
	KeepaliveInterval Duration `json:"keepaliveInterval,omitempty"`
	KeepaliveTimeout  Duration `json:"keepaliveTimeout,omitempty"`
	// MaxOpaqueConns bounds the connections the listener serves itself instead of the relay:
	// being sniffed, in a CONNECT handshake, or relayed opaque (each of those holds two 16 KiB
	// buffers). Past it a new connection is closed at once. Default 1024.
	MaxOpaqueConns int `json:"maxOpaqueConns,omitempty"`
}

// Descriptors names a FileDescriptorSet file (protoc --descriptor_set_out --include_imports)
// or, when empty, uses the server reflection of the callee at Reflection.
type Descriptors struct {
	File       string `json:"file,omitempty"`
	Reflection string `json:"reflection,omitempty"`
}

// Route turns the calls it matches into Restate invocations.
type Route struct {
	// Match is a glob over the full method "package.Service/Method"; "*" matches every method.
	Match string `json:"match"`
	// Target is the Restate service kind: service (default), object or workflow.
	Target string `json:"target,omitempty"`
	// Service is the Restate service name. Default: the gRPC service name.
	Service string `json:"service,omitempty"`
	// Key is where an object key or workflow id comes from.
	Key Source `json:"key,omitempty"`
	// Mode is call (default: wait for the result) or send (answer at once, run later).
	Mode  string   `json:"mode,omitempty"`
	Delay Duration `json:"delay,omitempty"`
	// IdempotencyKey is where the idempotency key comes from. Default metadata:idempotency-key.
	IdempotencyKey Source `json:"idempotencyKey,omitempty"`
	// AutoIdempotencyKey gives a call that brings no idempotency key one of the sidecar's own,
	// random, one per call: then a call whose connection to a Restate node breaks is re-issued
	// on another node and still runs once. It costs Restate throughput (it keeps each call's
	// result for the service's idempotency retention; README "A Restate cluster"). Default
	// false (DefaultAutoIdempotencyKey).
	AutoIdempotencyKey *bool `json:"autoIdempotencyKey,omitempty"`
	// Run is the workflow's run method (default "Run"): it takes no idempotency key, since the
	// workflow id already makes it run once.
	Run string `json:"run,omitempty"`
	// Timeout bounds how long a caller waits; its own deadline bounds it too. Default 30s.
	Timeout Duration `json:"timeout,omitempty"`
	// OnCallerGone is keep (default) or cancel: what a caller's cancel or deadline does to the
	// invocation.
	OnCallerGone string `json:"onCallerGone,omitempty"`
	// AllowMetadata lists caller headers forwarded to Restate although they are withheld by
	// default (authorization, cookie, ...): Restate stores every header in its journal.
	AllowMetadata []string `json:"allowMetadata,omitempty"`
}

// Inbound configures the Restate deployment endpoint in front of the app.
type Inbound struct {
	// App is the app's gRPC address.
	App string `json:"app"`
	// Listen is the endpoint's address. Default 0.0.0.0:9080.
	Listen   string           `json:"listen,omitempty"`
	Services []InboundService `json:"services"`
	Register *Register        `json:"register,omitempty"`
	// IdentityKeys are Restate request-identity public keys (publickeyv1_...). When set,
	// unsigned requests are refused.
	IdentityKeys []string `json:"identityKeys,omitempty"`
}

// InboundService exposes one gRPC service of the app to Restate.
type InboundService struct {
	Name string `json:"name"`
	// As renames the Restate service; default Name.
	As   string `json:"as,omitempty"`
	Kind string `json:"kind,omitempty"` // service | object | workflow
	// Handlers lists the methods and their kinds: object exclusive (default) | shared; workflow
	// run | shared. When empty, the methods come from the app's server reflection.
	Handlers       map[string]string `json:"handlers,omitempty"`
	RetryableCodes []string          `json:"retryableCodes,omitempty"`
	AttemptTimeout Duration          `json:"attemptTimeout,omitempty"`
	// FastPath skips the Run step that journals the app's answer before it becomes the
	// invocation's result. That saves a round trip to Restate per call, but a cancel then waits
	// for the app's answer, and if Restate crashes between the app's answer and its commit, the
	// retry must get a byte-identical answer from the app (no counters, timestamps or map
	// fields), or the invocation's replay fails until it is killed. Only for deterministic apps.
	FastPath bool `json:"fastPath,omitempty"`
}

// AutoKey reports whether calls without an idempotency key get one of the sidecar's own.
func (r *Route) AutoKey() bool {
	if r.AutoIdempotencyKey == nil {
		return DefaultAutoIdempotencyKey
	}
	return *r.AutoIdempotencyKey
}

// RestateName is the Restate service name of s.
func (s InboundService) RestateName() string {
	if s.As != "" {
		return s.As
	}
	return s.Name
}

// Register says where and as what the endpoint registers itself.
type Register struct {
	// Admin is the Restate admin API; a list, as outbound.ingress, for a cluster: any node
	// that answers registers the deployment for the whole cluster.
	Admin URLs `json:"admin"`
	// URI is how Restate reaches the endpoint; $(VAR) expands from the environment.
	URI    string `json:"uri"`
	Access Access `json:"access,omitempty"`
}

// Access is how the sidecar authenticates to Restate: a bearer token (sent as
// "authorization: Bearer ...") and, for https URLs, the CA that signed Restate's certificate.
type Access struct {
	BearerToken string `json:"bearerToken,omitempty"`
	// BearerTokenFile holds the token; it is read again when it changes (Kubernetes rotates
	// projected tokens), and a failed re-read keeps the last token.
	BearerTokenFile string `json:"bearerTokenFile,omitempty"`
	// CAFile is a PEM bundle trusted besides the system's roots.
	CAFile string `json:"caFile,omitempty"`
}

func (a Access) validate(bad func(string, string, ...any), field string, env Env) {
	if a.BearerToken != "" && a.BearerTokenFile != "" {
		bad(field, "set bearerToken or bearerTokenFile, not both")
	}
	for _, f := range []struct{ name, path string }{{"bearerTokenFile", a.BearerTokenFile}, {"caFile", a.CAFile}} {
		if f.path == "" {
			continue
		}
		if env.Stat == nil {
			continue
		}
		if err := env.Stat(f.path); err != nil {
			bad(field+"."+f.name, "%v", err)
		}
	}
}

// Kinds and modes.
const (
	KindService  = "service"
	KindObject   = "object"
	KindWorkflow = "workflow"

	ModeCall = "call"
	ModeSend = "send"

	HandlerExclusive = "exclusive"
	HandlerShared    = "shared"
	HandlerRun       = "run"

	UnmatchedPassthrough = "passthrough"
	UnmatchedReject      = "reject"

	OnCallerGoneKeep   = "keep"
	OnCallerGoneCancel = "cancel"

	DefaultOutboundListen  = "127.0.0.1:15001"
	DefaultInboundListen   = "0.0.0.0:9080"
	DefaultMaxMessageBytes = 4 << 20

	DefaultMaxConcurrentStreams = 1000
	DefaultMaxHeaderListBytes   = 60 << 10
	DefaultMaxDurableCalls      = 4096
	DefaultMaxResetsPerSecond   = 200
	DefaultPrefaceTimeout       = 10 * time.Second
	DefaultIdleTimeout          = 5 * time.Minute
	DefaultUpstreamIdleTimeout  = time.Minute
	DefaultKeepaliveInterval    = 10 * time.Second
	DefaultKeepaliveTimeout     = 5 * time.Second
	DefaultMaxOpaqueConns       = 1024
	DefaultDetectTimeout        = 500 * time.Millisecond
	DefaultTimeout              = 30 * time.Second
	DefaultAttemptTimeout       = 30 * time.Second
	DefaultIdempotencyKey       = "idempotency-key"
	DefaultCheckInterval        = 2 * time.Second
	DefaultShutdownGrace        = 25 * time.Second
	// DefaultAutoIdempotencyKey is off: a unique key per call cost Restate about a fifth of its
	// throughput (README "A Restate cluster").
	DefaultAutoIdempotencyKey = false
)

// Log formats.
const (
	LogFormatText = "text"
	LogFormatJSON = "json"
)

// DefaultRetryableCodes are the callee codes Restate retries unless a service lists its own.
var DefaultRetryableCodes = []string{"UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED", "DEADLINE_EXCEEDED"}

// Load reads, expands, defaults and validates the file at name.
func Load(name string) (*Config, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// Parse reads YAML or JSON, fills in defaults and validates. Unknown fields are errors: a typo
// must not silently turn a durable route into a passthrough one.
func Parse(b []byte) (*Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	if c.Outbound == nil && c.Inbound == nil {
		return nil, errors.New("invalid config: neither outbound nor inbound is configured")
	}
	c.setDefaults(Process)
	if err := c.validate(Process); err != nil {
		return nil, err
	}
	return &c, nil
}

// Env is what a config is checked against: the environment its $(VAR) references expand from
// and the files it names. The injector checks a pod's config without the pod's environment
// and files at hand.
type Env struct {
	Getenv func(string) string
	// Stat, when set, checks that a named file can be read.
	Stat func(path string) error
}

// Process is this process's environment and files.
var Process = Env{Getenv: os.Getenv, Stat: func(p string) error { _, err := os.Stat(p); return err }}

func (c *Config) setDefaults(env Env) {
	c.LogFormat = or(c.LogFormat, LogFormatText)
	if c.Health.CheckInterval == 0 {
		c.Health.CheckInterval = Duration(DefaultCheckInterval)
	}
	if c.Shutdown.Grace == 0 {
		c.Shutdown.Grace = Duration(DefaultShutdownGrace)
	}
	if o := c.Outbound; o != nil {
		o.Listen = or(o.Listen, DefaultOutboundListen)
		o.Unmatched = or(o.Unmatched, UnmatchedPassthrough)
		if o.MaxMessageBytes == 0 {
			o.MaxMessageBytes = DefaultMaxMessageBytes
		}
		if o.DetectTimeout == 0 {
			o.DetectTimeout = Duration(DefaultDetectTimeout)
		}
		o.Limits.setDefaults()
		for i := range o.Routes {
			r := &o.Routes[i]
			r.Target = or(r.Target, KindService)
			r.Mode = or(r.Mode, ModeCall)
			r.Run = or(r.Run, "Run")
			r.OnCallerGone = or(r.OnCallerGone, OnCallerGoneKeep)
			if r.IdempotencyKey.IsZero() {
				r.IdempotencyKey = Source{Metadata: DefaultIdempotencyKey}
			}
			if r.Timeout == 0 {
				r.Timeout = Duration(DefaultTimeout)
			}
			if r.AutoIdempotencyKey == nil {
				r.AutoIdempotencyKey = new(DefaultAutoIdempotencyKey)
			}
		}
	}
	if in := c.Inbound; in != nil {
		in.Listen = or(in.Listen, DefaultInboundListen)
		for i := range in.Services {
			s := &in.Services[i]
			s.Kind = or(s.Kind, KindService)
			if s.RetryableCodes == nil {
				s.RetryableCodes = DefaultRetryableCodes
			}
			if s.AttemptTimeout == 0 {
				s.AttemptTimeout = Duration(DefaultAttemptTimeout)
			}
		}
		if r := in.Register; r != nil {
			r.URI = expandEnv(r.URI, env.Getenv)
		}
	}
}

func (l *Limits) setDefaults() {
	orInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	orDur := func(v *Duration, def time.Duration) {
		if *v == 0 {
			*v = Duration(def)
		}
	}
	orInt(&l.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
	orInt(&l.MaxHeaderListBytes, DefaultMaxHeaderListBytes)
	orInt(&l.MaxDurableCalls, DefaultMaxDurableCalls)
	orInt(&l.MaxResetsPerSecond, DefaultMaxResetsPerSecond)
	orInt(&l.MaxOpaqueConns, DefaultMaxOpaqueConns)
	orDur(&l.PrefaceTimeout, DefaultPrefaceTimeout)
	orDur(&l.IdleTimeout, DefaultIdleTimeout)
	orDur(&l.UpstreamIdleTimeout, DefaultUpstreamIdleTimeout)
	orDur(&l.KeepaliveInterval, DefaultKeepaliveInterval)
	orDur(&l.KeepaliveTimeout, DefaultKeepaliveTimeout)
}

func (l *Limits) validate(bad func(field, format string, a ...any), f string) {
	for _, c := range []struct {
		name string
		v    int
	}{{"maxConcurrentStreams", l.MaxConcurrentStreams}, {"maxDurableCalls", l.MaxDurableCalls}, {"maxResetsPerSecond", l.MaxResetsPerSecond}, {"maxOpaqueConns", l.MaxOpaqueConns}} {
		if c.v < 1 {
			bad(f+"."+c.name, "must be at least 1, got %d", c.v)
		}
	}
	// Below 1 KiB no gRPC call fits; above 16 MiB a peer's header block could hold much memory.
	if l.MaxHeaderListBytes < 1<<10 || l.MaxHeaderListBytes > 16<<20 {
		bad(f+".maxHeaderListBytes", "must be between 1024 and 16777216, got %d", l.MaxHeaderListBytes)
	}
	for _, c := range []struct {
		name string
		v    Duration
	}{{"prefaceTimeout", l.PrefaceTimeout}, {"idleTimeout", l.IdleTimeout}, {"upstreamIdleTimeout", l.UpstreamIdleTimeout}, {"keepaliveInterval", l.KeepaliveInterval}, {"keepaliveTimeout", l.KeepaliveTimeout}} {
		if c.v < 0 {
			bad(f+"."+c.name, "must not be negative, got %s", c.v.Std())
		}
	}
}

// expandEnv expands Kubernetes-style $(VAR) references.
func expandEnv(s string, getenv func(string) string) string {
	return envRef.ReplaceAllStringFunc(s, func(m string) string { return getenv(m[2 : len(m)-1]) })
}

var envRef = regexp.MustCompile(`\$\([A-Za-z_][A-Za-z0-9_]*\)`)

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Validate reports every problem of c at once, each naming its field, as an *Error.
func (c *Config) Validate() error { return c.validate(Process) }

// Error lists every problem of a config.
type Error struct {
	Problems []Problem
}

// Problem is one wrong field of a config.
type Problem struct {
	Field   string // e.g. outbound.routes[0].target
	Message string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("invalid config: ")
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.Field + ": " + p.Message)
	}
	return b.String()
}

func (c *Config) validate(env Env) error {
	var errs []Problem
	bad := func(field, format string, a ...any) {
		errs = append(errs, Problem{field, fmt.Sprintf(format, a...)})
	}
	if c.LogLevel != "" {
		oneOf(bad, "logLevel", c.LogLevel, "debug", "info", "warn", "error")
	}
	oneOf(bad, "logFormat", c.LogFormat, LogFormatText, LogFormatJSON)
	// Faster, and the probes load the app and the ingress; slower, and a pod stays ready
	// (or unready) long after the app changed.
	if d := c.Health.CheckInterval.Std(); d < 100*time.Millisecond || d > time.Minute {
		bad("health.checkInterval", "must be between 100ms and 1m, got %s", d)
	}
	// Under a second leaves calls no time to finish; past an hour is no pod's grace period.
	if d := c.Shutdown.Grace.Std(); d < time.Second || d > time.Hour {
		bad("shutdown.grace", "must be between 1s and 1h (a few seconds below the pod's terminationGracePeriodSeconds), got %s", d)
	}
	if t := c.Tracing; t != nil {
		t.validate(bad)
	}
	if o := c.Outbound; o != nil {
		checkAddr(bad, "outbound.listen", o.Listen)
		if len(o.Routes) > 0 || len(o.Ingress) > 0 {
			checkURLs(bad, "outbound.ingress", o.Ingress)
		}
		if len(o.Admin) > 0 {
			checkURLs(bad, "outbound.admin", o.Admin)
		}
		o.Access.validate(bad, "outbound.access", env)
		oneOf(bad, "outbound.unmatched", o.Unmatched, UnmatchedPassthrough, UnmatchedReject)
		if o.MaxMessageBytes < 0 {
			bad("outbound.maxMessageBytes", "must be positive, got %d", o.MaxMessageBytes)
		}
		o.Limits.validate(bad, "outbound.limits")
		if o.Descriptors.File != "" && o.Descriptors.Reflection != "" {
			bad("outbound.descriptors", "set file or reflection, not both")
		}
		for key, addr := range o.Upstreams {
			if strings.Contains(key, ":") {
				if _, _, err := splitDestination(key); err != nil {
					bad("outbound.upstreams."+key, "a key with a colon is a destination: %v", err)
				}
			}
			checkAddr(bad, "outbound.upstreams."+key, addr)
		}
		// Shorter, and a slow client is taken for a server-first one; longer, and a
		// server-first protocol waits that long for its greeting.
		if d := o.DetectTimeout.Std(); d < 10*time.Millisecond || d > 10*time.Second {
			bad("outbound.detectTimeout", "must be between 10ms and 10s, got %s", d)
		}
		for i, d := range o.AllowDestinations {
			if _, err := parseDestination(d); err != nil {
				bad(fmt.Sprintf("outbound.allowDestinations[%d]", i), "%v", err)
			}
		}
		for i, r := range o.Routes {
			f := fmt.Sprintf("outbound.routes[%d]", i)
			if r.Match == "" {
				bad(f+".match", "required: a full-method glob such as orders.v1.OrderService/*")
			} else if _, err := path.Match(r.Match, "x/y"); err != nil {
				bad(f+".match", "bad glob %q: %v", r.Match, err)
			}
			oneOf(bad, f+".target", r.Target, KindService, KindObject, KindWorkflow)
			oneOf(bad, f+".mode", r.Mode, ModeCall, ModeSend)
			oneOf(bad, f+".onCallerGone", r.OnCallerGone, OnCallerGoneKeep, OnCallerGoneCancel)
			if r.OnCallerGone == OnCallerGoneCancel && len(o.Admin) == 0 {
				bad(f+".onCallerGone", "cancel needs outbound.admin, the Restate admin API that cancels invocations")
			}
			if r.Service != "" {
				if err := CheckServiceName(r.Service); err != nil {
					bad(f+".service", "%v", err)
				}
			}
			if r.Target == KindService && !r.Key.IsZero() {
				bad(f+".key", "a key needs target object or workflow, not service")
			}
			if r.Delay != 0 && r.Mode != ModeSend {
				bad(f+".delay", "a delay needs mode: send (Restate delays only sends)")
			}
		}
	}
	if in := c.Inbound; in != nil {
		checkAddr(bad, "inbound.app", in.App)
		checkAddr(bad, "inbound.listen", in.Listen)
		if len(in.Services) == 0 {
			bad("inbound.services", "required: list the gRPC services to expose")
		}
		seen := map[string]bool{}
		for i, s := range in.Services {
			f := fmt.Sprintf("inbound.services[%d]", i)
			if s.Name == "" {
				bad(f+".name", "required: the gRPC service name, e.g. orders.v1.OrderService")
				continue
			}
			if err := CheckServiceName(s.RestateName()); err != nil {
				bad(f+".name", "%v; rename it with as:", err)
			}
			if seen[s.RestateName()] {
				bad(f+".name", "service %q is listed twice", s.RestateName())
			}
			seen[s.RestateName()] = true
			oneOf(bad, f+".kind", s.Kind, KindService, KindObject, KindWorkflow)
			runs := 0
			for m, h := range s.Handlers {
				hf := f + ".handlers." + m
				if !handlerName.MatchString(m) {
					bad(hf, "bad method name %q", m)
				}
				switch s.Kind {
				case KindService:
					if h != "" {
						bad(hf, "a service's handlers have no kind; leave it empty or use kind: object")
					}
				case KindObject:
					oneOf(bad, hf, or(h, HandlerExclusive), HandlerExclusive, HandlerShared)
				case KindWorkflow:
					oneOf(bad, hf, or(h, HandlerShared), HandlerRun, HandlerShared)
					if h == HandlerRun {
						runs++
					}
				}
			}
			if s.Kind == KindWorkflow && len(s.Handlers) > 0 && runs != 1 {
				bad(f+".handlers", "a workflow needs exactly one run handler, got %d", runs)
			}
			for _, code := range s.RetryableCodes {
				if _, ok := CodeByName(code); !ok {
					bad(f+".retryableCodes", "unknown gRPC code %q (want e.g. UNAVAILABLE)", code)
				}
			}
		}
		if r := in.Register; r != nil {
			checkURLs(bad, "inbound.register.admin", r.Admin)
			checkURL(bad, "inbound.register.uri", r.URI)
			r.Access.validate(bad, "inbound.register.access", env)
		}
		for i, k := range in.IdentityKeys {
			if !strings.HasPrefix(k, "publickeyv1_") {
				bad(fmt.Sprintf("inbound.identityKeys[%d]", i), "want a Restate public key publickeyv1_...")
			}
		}
	}
	if len(errs) > 0 {
		return &Error{Problems: errs}
	}
	return nil
}

var (
	serviceName = regexp.MustCompile(`^([a-zA-Z]|_[a-zA-Z0-9])[a-zA-Z0-9._-]*$`)
	handlerName = regexp.MustCompile(`^([a-zA-Z]|_[a-zA-Z0-9])[a-zA-Z0-9_]*$`)
)

// CheckServiceName reports whether Restate accepts name as a service name: its pattern, and no
// name starting with "restate" (any case) or equal to "openapi", which Restate reserves.
func CheckServiceName(name string) error {
	if !serviceName.MatchString(name) {
		return fmt.Errorf("%q is not a valid Restate service name (letters, digits, '.', '_', '-'; starting with a letter)", name)
	}
	if l := strings.ToLower(name); strings.HasPrefix(l, "restate") || l == "openapi" {
		return fmt.Errorf("service name %q is reserved by Restate (names starting with \"restate\")", name)
	}
	return nil
}

func oneOf(bad func(string, string, ...any), field, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	bad(field, "%q is not one of %s", v, strings.Join(allowed, ", "))
}

func (t *Tracing) validate(bad func(string, string, ...any)) {
	if t.Protocol != "" {
		oneOf(bad, "tracing.protocol", t.Protocol, ProtocolGRPC, ProtocolHTTP)
	}
	if t.OTLPEndpoint != "" {
		// CheckBaseURL refuses a path; only OTLP/HTTP has one (/v1/traces, or a collector's own).
		u, path := t.OTLPEndpoint, ""
		if p, err := url.Parse(u); err == nil {
			path = p.Path
			p.Path, p.RawPath = "", ""
			u = p.String()
		}
		if err := CheckBaseURL(u); err != nil {
			bad("tracing.otlpEndpoint", "%v", err)
		} else if path != "" && path != "/" && t.Protocol != ProtocolHTTP {
			bad("tracing.otlpEndpoint", "%q: an OTLP/gRPC endpoint has no path, got %q; for OTLP/HTTP set tracing.protocol: %s", t.OTLPEndpoint, path, ProtocolHTTP)
		}
	}
	if r := t.SamplingRatio; r != nil && !(*r >= 0 && *r <= 1) {
		bad("tracing.samplingRatio", "want a ratio from 0 to 1 (the share of new traces sampled), got %v", *r)
	}
}

func checkAddr(bad func(string, string, ...any), field, addr string) {
	if addr == "" {
		bad(field, "required: host:port")
		return
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		bad(field, "want host:port, got %q", addr)
	}
}

func checkURL(bad func(string, string, ...any), field, s string) {
	if s == "" {
		bad(field, "required: a URL such as http://restate:8080")
		return
	}
	if err := CheckBaseURL(s); err != nil {
		bad(field, "%v", err)
	}
}

// CheckBaseURL reports whether s can be the base of Restate's ingress or admin API, or of a
// deployment: http or https, a host, and nothing after it. Restate serves at the root: a path
// would be read as a service name ("service 'x' not found" on every call), and a query,
// fragment or user info would be dropped or sent where they do not belong.
func CheckBaseURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("want an http(s) URL, got %q: %v", s, err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.Opaque != "":
		return fmt.Errorf("want an http(s) URL such as http://restate:8080, got %q", s)
	case u.Hostname() == "":
		return fmt.Errorf("%q has no host", s)
	case u.User != nil:
		return fmt.Errorf("%q must have no user info: give credentials in access (bearerToken, bearerTokenFile)", redact(u))
	case u.Path != "" && u.Path != "/":
		return fmt.Errorf("%q must have no path (Restate serves at the root; a path would be read as a service name), got %q", s, u.Path)
	case u.RawQuery != "" || u.ForceQuery:
		return fmt.Errorf("%q must have no query", s)
	case u.Fragment != "" || strings.Contains(s, "#"):
		return fmt.Errorf("%q must have no fragment", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: bad port %q", s, p)
		}
	}
	return nil
}

func redact(u *url.URL) string {
	v := *u
	v.User = url.User("...")
	return v.String()
}

// Marshal renders c as YAML, defaults included.
func Marshal(c *Config) ([]byte, error) { return yaml.Marshal(c) }
