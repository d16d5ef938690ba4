package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the README's annotation table from Annotations")

func podEnv(vars map[string]string) Env {
	return Env{Getenv: func(k string) string { return vars[k] }}
}

func TestParseAnnotations(t *testing.T) {
	const p = AnnotationPrefix
	tests := []struct {
		name    string
		ann     map[string]string
		check   func(t *testing.T, got *Pod)
		wantErr []string // each a whole problem, in order
	}{
		{
			name: "outbound from a URL and a section",
			ann: map[string]string{p + "inject": "true", p + "ingress-url": "http://restate:8080", "other.io/x": "ignored",
				p + "outbound": "routes: [{match: orders.v1.OrderService/*, target: object, key: 'metadata:order-id'}]"},
			check: func(t *testing.T, got *Pod) {
				o := got.Config.Outbound
				if o.Ingress.String() != "http://restate:8080" || o.Listen != DefaultOutboundListen || o.Routes[0].Key.Metadata != "order-id" || o.Routes[0].Timeout.Std() != DefaultTimeout {
					t.Errorf("got outbound %+v", o)
				}
				if got.Config.Inbound != nil || got.Interception != InterceptExplicit || !got.Inject {
					t.Errorf("got inbound %v, interception %q, inject %v", got.Config.Inbound, got.Interception, got.Inject)
				}
			},
		},
		{
			name: "a cluster's nodes, comma-separated",
			ann:  map[string]string{p + "ingress-url": "http://n1:8080, http://n2:8080", p + "admin-url": "http://n1:9070,http://n2:9070"},
			check: func(t *testing.T, got *Pod) {
				o := got.Config.Outbound
				if d := cmp.Diff(URLs{"http://n1:8080", "http://n2:8080"}, o.Ingress); d != "" {
					t.Errorf("ingress (-want +got):\n%s", d)
				}
				if d := cmp.Diff(URLs{"http://n1:9070", "http://n2:9070"}, o.Admin); d != "" {
					t.Errorf("admin (-want +got):\n%s", d)
				}
			},
		},
		{
			name: "inbound registers at the pod's address",
			ann: map[string]string{p + "app-port": "50051", p + "admin-url": "http://restate:9070", p + "identity-keys": "publickeyv1_a, publickeyv1_b",
				p + "inbound": "services: [{name: orders.v1.OrderService, kind: object}]"},
			check: func(t *testing.T, got *Pod) {
				in := got.Config.Inbound
				want := &Register{Admin: URLs{"http://restate:9070"}, URI: "http://10.1.2.3:9080"}
				if d := cmp.Diff(want, in.Register); d != "" || in.App != "127.0.0.1:50051" {
					t.Errorf("got app %q, register (-want +got):\n%s", in.App, d)
				}
				if d := cmp.Diff([]string{"publickeyv1_a", "publickeyv1_b"}, in.IdentityKeys); d != "" {
					t.Errorf("identity keys (-want +got):\n%s", d)
				}
				if got.Config.Outbound != nil {
					t.Errorf("got an outbound section, want none (explicit interception, no ingress)")
				}
			},
		},
		{
			name: "transparent interception always has an outbound listener",
			ann:  map[string]string{p + "interception": "iptables", p + "outbound-ports": "50051, 8080", p + "inbound": "{app: '127.0.0.1:1', services: [{name: a.B}]}", p + "log-level": "debug", p + "otlp-endpoint": "http://otel:4317"},
			check: func(t *testing.T, got *Pod) {
				if got.Config.Outbound == nil || got.Config.Outbound.Unmatched != UnmatchedPassthrough {
					t.Errorf("got outbound %+v, want a passthrough one", got.Config.Outbound)
				}
				if d := cmp.Diff([]uint16{50051, 8080}, got.OutboundPorts); d != "" {
					t.Errorf("ports (-want +got):\n%s", d)
				}
				if got.Config.LogLevel != "debug" || got.Config.Tracing.OTLPEndpoint != "http://otel:4317" {
					t.Errorf("got log level %q, tracing %+v", got.Config.LogLevel, got.Config.Tracing)
				}
			},
		},
		{
			name:    "unknown annotation and bad values",
			ann:     map[string]string{p + "inject": "yes please", p + "ingres-url": "x", p + "interception": "sidecar", p + "proxy-memory": "lots", p + "app-port": "0", p + "outbound": "{}"},
			wantErr: []string{p + "ingres-url: unknown annotation (known: " + knownNames() + ")", p + `inject: want true or false, got "yes please"`, p + `interception: "sidecar" is not one of explicit, proxy-env, iptables`, p + `proxy-memory: want a Kubernetes quantity such as 100m or 64Mi, got "lots"`, p + `app-port: want a port 1-65535, got "0"`},
		},
		{
			name:    "a section that is not the config's",
			ann:     map[string]string{p + "outbound": "routes: [{mach: x.Y/*}]"},
			wantErr: []string{p + `outbound: want the outbound section of the config file as YAML or JSON: error unmarshaling JSON: while decoding JSON: json: unknown field "mach"`},
		},
		{
			name:    "one field set twice",
			ann:     map[string]string{p + "ingress-url": "http://a:8080", p + "outbound": "ingress: http://b:8080"},
			wantErr: []string{p + "ingress-url: outbound.ingress is set by restate-grpc.io/outbound too: set it in one place"},
		},
		{
			name:    "problems of the config name their annotation",
			ann:     map[string]string{p + "ingress-url": "http://a:8080/x", p + "inbound": "services: [{name: restate.X}]", p + "log-level": "loud", p + "otlp-endpoint": "otel:4317"},
			wantErr: []string{p + `log-level: logLevel: "loud" is not one of debug, info, warn, error`, p + `otlp-endpoint: tracing.otlpEndpoint: want an http(s) URL such as http://restate:8080, got "otel:4317"`, p + `ingress-url: outbound.ingress: "http://a:8080/x" must have no path (Restate serves at the root; a path would be read as a service name), got "/x"`, p + "inbound: inbound.app: required: host:port", p + `inbound: inbound.services[0].name: service name "restate.X" is reserved by Restate (names starting with "restate"); rename it with as:`},
		},
		{
			name:    "a missing URL is asked for by its annotation",
			ann:     map[string]string{p + "outbound": "routes: [{match: x.Y/*, onCallerGone: cancel}]"},
			wantErr: []string{p + "ingress-url: outbound.ingress: required: a URL such as http://restate:8080", p + "outbound: outbound.routes[0].onCallerGone: cancel needs outbound.admin, the Restate admin API that cancels invocations"},
		},
		{
			name:    "ports without iptables",
			ann:     map[string]string{p + "outbound-ports": "50051", p + "ingress-url": "http://a:8080"},
			wantErr: []string{p + "outbound-ports: only iptables interception captures ports; set restate-grpc.io/interception: iptables"},
		},
		{
			name:    "nothing to do",
			ann:     map[string]string{p + "inject": "true"},
			wantErr: []string{p + "inject: the sidecar has nothing to do: set restate-grpc.io/outbound (or ingress-url, or a transparent interception) or restate-grpc.io/inbound (with app-port)"},
		},
		{
			name:    "identity keys without inbound",
			ann:     map[string]string{p + "identity-keys": "publickeyv1_a", p + "ingress-url": "http://a:8080"},
			wantErr: []string{p + "identity-keys: needs an inbound section (restate-grpc.io/inbound): the keys check Restate's requests to the app"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAnnotations(tt.ann, podEnv(map[string]string{"POD_IP": "10.1.2.3"}))
			if tt.wantErr != nil {
				var ae *AnnotationError
				if !errors.As(err, &ae) {
					t.Fatalf("got error %v (%T), want an *AnnotationError", err, err)
				}
				var msgs []string
				for _, p := range ae.Problems {
					msgs = append(msgs, p.Field+": "+p.Message)
				}
				if d := cmp.Diff(tt.wantErr, msgs); d != "" {
					t.Errorf("problems (-want +got):\n%s", d)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, got)
		})
	}
}

// formatMap writes annotations as the kubelet writes a downward-API file
// (k8s.io/kubernetes/pkg/fieldpath.FormatMap).
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var s string
	for _, k := range keys {
		s += fmt.Sprintf("%v=%q\n", k, m[k])
	}
	return strings.TrimSuffix(s, "\n")
}

func TestParseDownwardAPI(t *testing.T) {
	want := map[string]string{
		"restate-grpc.io/outbound": "routes:\n  - match: \"x.Y/*\"\n    key: metadata:k\n",
		"a":                        `quote " backslash \ tab	=equals=`,
		"kubernetes.io/unicode":    "ünïcødé ✓",
		"empty":                    "",
	}
	got, err := ParseDownwardAPI([]byte(formatMap(want)))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	for _, bad := range []string{"novalue", `k=unquoted`, `k="open`} {
		if _, err := ParseDownwardAPI([]byte(bad)); err == nil {
			t.Errorf("ParseDownwardAPI(%q): got no error", bad)
		}
	}
}

// TestReadmeAnnotations keeps the README's annotation table the one Annotations renders;
// -update rewrites it.
func TestReadmeAnnotations(t *testing.T) {
	const begin, end = "<!-- annotations:begin (go test ./internal/config -update) -->\n", "<!-- annotations:end -->"
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("README.md has no annotation table between %q and %q", begin, end)
	}
	var b strings.Builder
	b.WriteString("| Annotation (`restate-grpc.io/`) | Sets | Values | What it does |\n|---|---|---|---|\n")
	for _, a := range Annotations {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", a.Name, a.Sets, a.Values, a.Doc)
	}
	got := s[:i+len(begin)] + b.String() + s[j:]
	if *update {
		if err := os.WriteFile("../../README.md", []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if d := cmp.Diff(s, got); d != "" {
		t.Errorf("README.md's annotation table is not the schema's (-README +schema); run go test ./internal/config -update:\n%s", d)
	}
}
