package config

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{in: "5s", want: 5 * time.Second},
		{in: "1m30s", want: 90 * time.Second},
		{in: "500ms", want: 500 * time.Millisecond},
		{in: "PT5S", want: 5 * time.Second},
		{in: "PT1M30S", want: 90 * time.Second},
		{in: "P1D", want: 24 * time.Hour},
		{in: "P1DT2H", want: 26 * time.Hour},
		{in: "PT0.5S", want: 500 * time.Millisecond},
		{in: "pt2m", want: 2 * time.Minute},
		{in: "", err: "empty duration"},
		{in: "soon", err: `bad duration "soon"`},
		{in: "2000", err: `bad duration "2000"`},
		{in: "-1s", err: "must not be negative"},
		{in: "P", err: `bad duration "P"`},
		{in: "PT", err: `bad duration "PT"`},
		{in: "P1H", err: `bad duration "P1H"`},
	}
	for _, tc := range tests {
		got, err := ParseDuration(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseDuration(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	t.Setenv("RG_TEST_POD_IP", "10.1.2.3")
	c, err := Parse([]byte(`
outbound:
  ingress: http://restate:8080
  routes:
    - match: orders.v1.Orders/*
      target: object
      key: metadata:order-id
inbound:
  app: 127.0.0.1:50051
  services: [{name: orders.v1.Orders, kind: object}]
  register: {admin: "http://restate:9070", uri: "http://$(RG_TEST_POD_IP):9080"}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Outbound.Routes[0]
	checks := []struct{ name, got, want string }{
		{"outbound.listen", c.Outbound.Listen, "127.0.0.1:15001"},
		{"outbound.unmatched", c.Outbound.Unmatched, "passthrough"},
		{"route.mode", r.Mode, "call"},
		{"route.idempotencyKey", r.IdempotencyKey.String(), "metadata:idempotency-key"},
		{"route.key", r.Key.String(), "metadata:order-id"},
		{"route.onCallerGone", r.OnCallerGone, "keep"},
		{"route.timeout", r.Timeout.Std().String(), "30s"},
		{"outbound.detectTimeout", c.Outbound.DetectTimeout.Std().String(), "500ms"},
		{"outbound.limits.maxOpaqueConns", strconv.Itoa(c.Outbound.Limits.MaxOpaqueConns), "1024"},
		{"inbound.listen", c.Inbound.Listen, "0.0.0.0:9080"},
		{"logFormat", c.LogFormat, "text"},
		{"health.requireIngress", strconv.FormatBool(c.Health.RequireIngress), "false"},
		{"health.checkInterval", c.Health.CheckInterval.Std().String(), "2s"},
		{"shutdown.grace", c.Shutdown.Grace.Std().String(), "25s"},
		{"inbound.register.uri", c.Inbound.Register.URI, "http://10.1.2.3:9080"},
		{"inbound.services[0].retryableCodes", strings.Join(c.Inbound.Services[0].RetryableCodes, ","), "UNAVAILABLE,RESOURCE_EXHAUSTED,ABORTED,DEADLINE_EXCEEDED"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.name, ch.got, ch.want)
		}
	}
	if c.Outbound.MaxMessageBytes != 4<<20 {
		t.Errorf("maxMessageBytes = %d, want 4 MiB", c.Outbound.MaxMessageBytes)
	}
}

func TestParseJSON(t *testing.T) {
	c, err := Parse([]byte(`{"outbound": {"ingress": "http://r:8080", "routes": [{"match": "a.B/*", "mode": "send", "delay": "PT2S"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Outbound.Routes[0].Delay.Std(); got != 2*time.Second {
		t.Errorf("delay = %v, want 2s", got)
	}
}

// TestParseURLs: a Restate cluster's nodes come as a list or comma-separated; one URL stays
// a string when the config is written out.
func TestParseURLs(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       URLs
		marshaled  string
	}{
		{"one", "outbound: {ingress: 'http://r:8080'}", URLs{"http://r:8080"}, "ingress: http://r:8080\n"},
		{"list", "outbound: {ingress: ['http://r1:8080', 'http://r2:8080']}", URLs{"http://r1:8080", "http://r2:8080"}, "ingress:\n  - http://r1:8080\n  - http://r2:8080\n"},
		{"comma-separated", "outbound: {ingress: 'http://r1:8080, http://r2:8080,'}", URLs{"http://r1:8080", "http://r2:8080"}, "ingress:\n  - http://r1:8080\n  - http://r2:8080\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, c.Outbound.Ingress); d != "" {
				t.Errorf("ingress (-want +got):\n%s", d)
			}
			b, err := Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), tc.marshaled) {
				t.Errorf("marshaled:\n%s\nwant it to hold %q", b, tc.marshaled)
			}
		})
	}
}

// TestParseInvalid: every bad config is refused with a message naming the field and the fix.
func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"empty", ``, "neither outbound nor inbound"},
		{"not yaml", "outbound: [", "invalid config"},
		{"unknown field", "outbound: {ingress: 'http://r:8080', routs: []}", `unknown field "routs"`},
		{"route without match", "outbound: {ingress: 'http://r:8080', routes: [{target: object, key: 'metadata:k'}]}", "outbound.routes[0].match: required"},
		{"bad glob", "outbound: {ingress: 'http://r:8080', routes: [{match: 'a.B/[x'}]}", "bad glob"},
		{"bad target", "outbound: {ingress: 'http://r:8080', routes: [{match: a.B/*, target: actor}]}", `outbound.routes[0].target: "actor" is not one of service, object, workflow`},
		{"bad mode", "outbound: {ingress: 'http://r:8080', routes: [{match: a.B/*, mode: later}]}", `outbound.routes[0].mode: "later"`},
		{"bad key source", "outbound: {ingress: 'http://r:8080', routes: [{match: a.B/*, target: object, key: order-id}]}", `want metadata:<header> or field:<field.path>`},
		{"key on service", "outbound: {ingress: 'http://r:8080', routes: [{match: a.B/*, key: 'metadata:k'}]}", "a key needs target object or workflow"},
		{"delay on call", "outbound: {ingress: 'http://r:8080', routes: [{match: a.B/*, delay: 5s}]}", "a delay needs mode: send"},
		{"bad delay", "outbound: {ingress: 'http://r:8080', routes: [{match: a.B/*, mode: send, delay: soon}]}", `bad duration "soon"`},
		{"reserved service", "outbound: {ingress: 'http://r:8080', routes: [{match: a.B/*, service: restate.Svc}]}", "reserved by Restate"},
		{"bad service name", "outbound: {ingress: 'http://r:8080', routes: [{match: a.B/*, service: 'a/b'}]}", "not a valid Restate service name"},
		{"routes without ingress", "outbound: {routes: [{match: a.B/*}]}", "outbound.ingress: required"},
		{"bad ingress", "outbound: {ingress: 'restate:8080', routes: [{match: a.B/*}]}", "want an http(s) URL"},
		{"bad listen", "outbound: {listen: 15001}", "outbound.listen: want host:port"},
		{"bad unmatched", "outbound: {unmatched: drop}", `outbound.unmatched: "drop"`},
		{"both descriptor sources", "outbound: {descriptors: {file: x.pb, reflection: 'a:1'}}", "set file or reflection, not both"},
		{"inbound without services", "inbound: {app: '127.0.0.1:1'}", "inbound.services: required"},
		{"inbound without app", "inbound: {services: [{name: a.B}]}", "inbound.app: required"},
		{"inbound reserved name", "inbound: {app: '127.0.0.1:1', services: [{name: restate.x.Svc}]}", "rename it with as:"},
		{"inbound duplicate", "inbound: {app: '127.0.0.1:1', services: [{name: a.B}, {name: a.B}]}", "listed twice"},
		{"inbound bad kind", "inbound: {app: '127.0.0.1:1', services: [{name: a.B, kind: actor}]}", `kind: "actor"`},
		{"object handler kind", "inbound: {app: '127.0.0.1:1', services: [{name: a.B, kind: object, handlers: {Get: run}}]}", `handlers.Get: "run" is not one of exclusive, shared`},
		{"workflow without run", "inbound: {app: '127.0.0.1:1', services: [{name: a.B, kind: workflow, handlers: {Get: shared}}]}", "exactly one run handler"},
		{"bad retryable code", "inbound: {app: '127.0.0.1:1', services: [{name: a.B, retryableCodes: [SOMETIMES]}]}", `unknown gRPC code "SOMETIMES"`},
		{"register uri with path", "inbound: {app: '127.0.0.1:1', services: [{name: a.B}], register: {admin: 'http://r:9070', uri: 'http://p:9080/x'}}", "must have no path"},
		{"ingress with path", "outbound: {ingress: 'http://r:8080/restate', routes: [{match: a.B/*}]}", `outbound.ingress: "http://r:8080/restate" must have no path`},
		{"ingress with query", "outbound: {ingress: 'http://r:8080/?x=1'}", `outbound.ingress: "http://r:8080/?x=1" must have no query`},
		{"ingress with empty query", "outbound: {ingress: 'http://r:8080?'}", "must have no query"},
		{"ingress with fragment", "outbound: {ingress: 'http://r:8080#f'}", "must have no fragment"},
		{"ingress with user info", "outbound: {ingress: 'http://u:secret@r:8080'}", "must have no user info"},
		{"ingress user info redacted", "outbound: {ingress: 'http://u:secret@r:8080'}", `"http://...@r:8080"`},
		{"ingress without host", "outbound: {ingress: 'http://:8080'}", "has no host"},
		{"ingress bad scheme", "outbound: {ingress: 'grpc://r:8080'}", "want an http(s) URL"},
		{"ingress bad port", "outbound: {ingress: 'http://r:99999'}", `bad port "99999"`},
		{"admin with path", "outbound: {admin: 'http://r:9070/admin'}", `outbound.admin: "http://r:9070/admin" must have no path`},
		{"register admin with path", "inbound: {app: '127.0.0.1:1', services: [{name: a.B}], register: {admin: 'http://r:9070/x', uri: 'http://p:9080'}}", `inbound.register.admin: "http://r:9070/x" must have no path`},
		{"register admin with query", "inbound: {app: '127.0.0.1:1', services: [{name: a.B}], register: {admin: 'https://r:9070?a=b', uri: 'http://p:9080'}}", "inbound.register.admin: \"https://r:9070?a=b\" must have no query"},
		{"bad detect timeout", "outbound: {detectTimeout: 20s}", "outbound.detectTimeout: must be between 10ms and 10s, got 20s"},
		{"bad log format", "{logFormat: yaml, outbound: {}}", `logFormat: "yaml" is not one of text, json`},
		{"bad check interval", "{health: {checkInterval: 10ms}, outbound: {}}", "health.checkInterval: must be between 100ms and 1m, got 10ms"},
		{"bad shutdown grace", "{shutdown: {grace: 2h}, outbound: {}}", "shutdown.grace: must be between 1s and 1h (a few seconds below the pod's terminationGracePeriodSeconds), got 2h0m0s"},
		{"negative opaque bound", "outbound: {limits: {maxOpaqueConns: -1}}", "outbound.limits.maxOpaqueConns: must be at least 1"},
		{"allowed destination without port", "outbound: {allowDestinations: [orders]}", `outbound.allowDestinations[0]: want host:port, [ipv6]:port or a CIDR, got "orders"`},
		{"allowed destination bad port", "outbound: {allowDestinations: ['orders:http']}", `outbound.allowDestinations[0]: bad port "http"`},
		{"allowed destination bad glob", "outbound: {allowDestinations: ['orders\\:50051']}", `bad glob "orders\\"`},
		{"upstream destination bad port", "outbound: {upstreams: {'orders:0': '10.0.0.1:50051'}}", "outbound.upstreams.orders:0: a key with a colon is a destination"},
		{"bad node in a list", "outbound: {ingress: ['http://r1:8080', 'r2:8080']}", `outbound.ingress[1]: want an http(s) URL`},
		{"node listed twice", "outbound: {ingress: 'http://r1:8080, http://r1:8080/'}", `outbound.ingress[1]: "http://r1:8080/" is listed twice`},
		{"ingress not a string or list", "outbound: {ingress: {a: b}}", "want a URL, comma-separated URLs or a list of URLs"},
		{"bad identity key", "inbound: {app: '127.0.0.1:1', services: [{name: a.B}], identityKeys: [abc]}", "publickeyv1_"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse() error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestCheckBaseURL: the URLs Restate can serve at pass, a trailing slash included.
func TestCheckBaseURL(t *testing.T) {
	for _, s := range []string{"http://restate:8080", "http://restate:8080/", "https://restate.example", "http://[::1]:9070", "http://10.0.0.1:8080"} {
		if err := CheckBaseURL(s); err != nil {
			t.Errorf("CheckBaseURL(%q) = %v, want nil", s, err)
		}
	}
}

func TestParseSource(t *testing.T) {
	tests := []struct {
		in   string
		want Source
		err  bool
	}{
		{in: "metadata:Order-ID", want: Source{Metadata: "order-id"}},
		{in: "field:order.id", want: Source{Field: "order.id"}},
		{in: "field:order..id", err: true},
		{in: "header:x", err: true},
		{in: "metadata:", err: true},
	}
	for _, tc := range tests {
		got, err := ParseSource(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseSource(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// TestAllowsDestination: CONNECT targets against allowDestinations entries of each form.
func TestAllowsDestination(t *testing.T) {
	o := &Outbound{AllowDestinations: []string{
		"orders:50051", "*.svc.cluster.local:*", "10.1.0.0/16", "[fd00::/8]:443", "192.168.1.7:80", "[::1]:9000",
	}}
	for _, tc := range []struct {
		host, port string
		want       bool
	}{
		{"orders", "50051", true},
		{"ORDERS", "50051", true},
		{"orders", "50052", false},
		{"orders.default", "50051", false},
		{"pay.prod.svc.cluster.local", "8080", true},
		{"svc.cluster.local", "8080", false},
		{"10.1.200.3", "1", true},
		{"10.2.0.1", "50051", false},
		{"fd12::1", "443", true},
		{"fd12::1", "444", false},
		{"192.168.1.7", "80", true},
		{"::ffff:192.168.1.7", "80", true},
		{"192.168.1.8", "80", false},
		{"::1", "9000", true},
		{"localhost", "9000", false},
	} {
		if got := o.AllowsDestination(tc.host, tc.port); got != tc.want {
			t.Errorf("AllowsDestination(%q, %q) = %v, want %v", tc.host, tc.port, got, tc.want)
		}
	}
	if !(&Outbound{}).AllowsDestination("anything", "1") {
		t.Errorf("AllowsDestination with no allowDestinations = false, want true")
	}
}
