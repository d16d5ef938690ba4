package injector

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/restate-grpc/restate-grpc/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/inject")

const testConfig = `
image: ghcr.io/restate-grpc/sidecar:v0.1.0
ingressURL: http://restate.restate.svc:8080
adminURL: http://restate.restate.svc:9070
`

func testInjector(t *testing.T, extra string) *Injector {
	t.Helper()
	cfg, err := ParseConfig([]byte(testConfig + extra))
	if err != nil {
		t.Fatal(err)
	}
	return New(cfg, "restate-grpc-system")
}

// TestGolden injects each pod of testdata/inject as `sidecar inject` does and compares the
// result with its golden file (.injected, or .err for a refusal); -update rewrites them. Every
// result is injected again and must not change.
func TestGolden(t *testing.T) {
	tests := []struct {
		in, golden string
		config     string // added to testConfig
		native     bool
	}{
		{in: "plain.yaml", native: true},
		{in: "already-injected.yaml", native: true},
		{in: "not-annotated.yaml", native: true},
		{in: "explicit.yaml", native: true},
		{in: "proxy-env.yaml", native: true},
		{in: "iptables.yaml", native: true},
		{in: "inbound.yaml", native: true},
		{in: "existing-containers.yaml", native: true},
		{in: "resources.yaml", native: true},
		{in: "listen-port.yaml", native: true},
		{in: "host-network.yaml", native: true},
		{in: "bad-annotations.yaml", native: true},
		{in: "bad-route.yaml", native: true},
		{in: "bad-annotations.yaml", golden: "bad-annotations-skip", config: "onInvalid: skip", native: true},
		{in: "workloads.yaml", native: true},
		{in: "grace.yaml", native: true},
		{in: "grace-short.yaml", native: true},
		{in: "bad-grace.yaml", native: true},
		// API servers before 1.29: a plain container placed first holds the app.
		{in: "plain.yaml", golden: "plain-1.28", native: false},
		{in: "existing-containers.yaml", golden: "existing-containers-1.28", native: false},
		{in: "proxy-env.yaml", golden: "proxy-env-1.28", native: false},
	}
	for _, tt := range tests {
		name := strings.TrimSuffix(tt.in, ".yaml")
		if tt.golden != "" {
			name = tt.golden
		}
		t.Run(name, func(t *testing.T) {
			in := testInjector(t, tt.config)
			src, err := os.ReadFile(filepath.Join("testdata/inject", tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err = in.InjectYAML(bytes.NewReader(src), &out, "default", tt.native)
			got, ext := out.Bytes(), ".injected"
			if err != nil {
				got, ext = []byte(err.Error()+"\n"), ".err"
			}
			golden := filepath.Join("testdata/inject", name+ext)
			if *update {
				for _, old := range []string{".injected", ".err"} {
					os.Remove(filepath.Join("testdata/inject", name+old))
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, rerr := os.ReadFile(golden)
			if rerr != nil {
				t.Fatalf("%v (run go test ./internal/injector -update to write it)", rerr)
			}
			if d := cmp.Diff(string(want), string(got)); d != "" {
				t.Errorf("%s: got differs from %s (-want +got):\n%s", tt.in, golden, d)
			}
			if err != nil {
				return
			}
			var again bytes.Buffer
			if err := in.InjectYAML(bytes.NewReader(got), &again, "default", tt.native); err != nil {
				t.Fatalf("injecting the result again: %v", err)
			}
			if d := cmp.Diff(string(got), again.String()); d != "" {
				t.Errorf("injecting twice changed the result (-once +twice):\n%s", d)
			}
		})
	}
}

// TestInjectDecisions covers what the webhook knows and a YAML file does not: the namespace.
func TestInjectDecisions(t *testing.T) {
	pod := func(ann map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Annotations: ann},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "x"}}},
		}
	}
	on := map[string]string{InjectAnnotation: "true"}
	tests := []struct {
		name       string
		pod        *corev1.Pod
		target     Target
		wantStatus string // "" with wantSame: the very pod comes back
		wantSame   bool
		wantErr    string
	}{
		{"injected", pod(on), Target{Namespace: "shop", Native: true}, StatusInjected, false, ""},
		{"no annotation", pod(nil), Target{Namespace: "shop"}, "", true, ""},
		{"inject false", pod(map[string]string{InjectAnnotation: "false"}), Target{Namespace: "shop"}, "", true, ""},
		{"own namespace", pod(on), Target{Namespace: "restate-grpc-system"}, "skipped: namespace restate-grpc-system is the injector's own (its pods must start without it)", false, ""},
		{"kube-system", pod(on), Target{Namespace: "kube-system"}, "skipped: namespace kube-system belongs to Kubernetes", false, ""},
		{"namespace off", pod(on), Target{Namespace: "shop", NamespaceDisabled: true}, "skipped: namespace shop is labelled restate-grpc.io/inject=disabled", false, ""},
		{"bad inject value", pod(map[string]string{InjectAnnotation: "true", config.AnnotationPrefix + "log-level": "loud"}), Target{Namespace: "shop"}, "", false,
			`restate-grpc.io/log-level: logLevel: "loud" is not one of debug, info, warn, error`},
		{"request above limit", pod(map[string]string{InjectAnnotation: "true", config.AnnotationPrefix + "proxy-memory": "1Gi"}), Target{Namespace: "shop"}, "", false,
			"restate-grpc.io/proxy-memory: the memory request 1Gi is above its limit 256Mi (the API server would refuse the pod)"},
	}
	in := testInjector(t, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := in.Inject(tt.pod, tt.target)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Inject: got error %v, want %q", err, tt.wantErr)
				}
				var ae *config.AnnotationError
				if !errors.As(err, &ae) {
					t.Errorf("got %T, want a *config.AnnotationError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantSame {
				if got != tt.pod {
					t.Errorf("got a changed pod, want the same pod back")
				}
				return
			}
			if s := got.Annotations[StatusAnnotation]; s != tt.wantStatus {
				t.Errorf("status: got %q, want %q", s, tt.wantStatus)
			}
			hasSidecar := len(got.Spec.InitContainers) > 0
			if want := tt.wantStatus == StatusInjected; hasSidecar != want {
				t.Errorf("sidecar added: got %v, want %v", hasSidecar, want)
			}
			if tt.pod.Annotations[StatusAnnotation] != "" {
				t.Errorf("Inject changed its argument")
			}
		})
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct{ in, wantErr string }{
		{"", ""},
		{"imagePullPolicy: Always\nnoProxy: [.internal.example.com, 10.0.0.0/8]", ""},
		{"imag: x", `invalid injector config: error unmarshaling JSON: while decoding JSON: json: unknown field "imag"`},
		{"interception: sidecar", `interception: "sidecar" is not one of explicit, proxy-env, iptables`},
		{"ingressURL: restate:8080", `ingressURL: want an http(s) URL such as http://restate:8080, got "restate:8080"`},
		{"ingressURL: [http://restate-0.restate:8080, http://restate-1.restate:8080]\nadminURL: http://restate-0.restate:9070,http://restate-1.restate:9070", ""},
		{"ingressURL: [http://restate-0.restate:8080, 'restate-1:8080']", `ingressURL: want an http(s) URL such as http://restate:8080, got "restate-1:8080"`},
		{"imagePullPolicy: Sometimes", `imagePullPolicy: "Sometimes" is not one of Always, IfNotPresent, Never`},
		{"onInvalid: warn", `onInvalid: "warn" is not one of reject, skip`},
		{"noProxy: ['a, b']", `noProxy: "a, b": want one host, domain (.example.com) or IP per entry`},
	}
	for _, tt := range tests {
		c, err := ParseConfig([]byte(tt.in))
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("ParseConfig(%q): %v", tt.in, err)
		case tt.wantErr == "" && (c.Image != DefaultImage || c.OnInvalid != OnInvalidReject || c.Resources.Requests == nil):
			t.Errorf("ParseConfig(%q): got %+v, want the defaults filled in", tt.in, c)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParseConfig(%q): got error %v, want one holding %q", tt.in, err, tt.wantErr)
		}
	}
}

// TestInjectNodeList: an injector configured with a cluster's nodes writes them into the pod's
// annotations as the comma-separated list the sidecar reads back as those nodes.
func TestInjectNodeList(t *testing.T) {
	cfg, err := ParseConfig([]byte("ingressURL: [http://restate-0.restate:8080, http://restate-1.restate:8080]\nadminURL: http://restate-0.restate:9070,http://restate-1.restate:9070"))
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Annotations: map[string]string{config.AnnotationPrefix + "inject": "true", config.AnnotationPrefix + "inbound": "services: [{name: greet.Greeter}]", config.AnnotationPrefix + "app-port": "50051"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	out, err := New(cfg, "restate-grpc-system").Inject(pod, Target{Namespace: "default", Native: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := config.ParseAnnotations(out.Annotations, config.Env{Getenv: func(string) string { return "10.1.0.7" }})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Config.Outbound.Ingress, (config.URLs{"http://restate-0.restate:8080", "http://restate-1.restate:8080"}); !slices.Equal(got, want) {
		t.Errorf("outbound.ingress %q, want %q", got, want)
	}
	if got, want := p.Config.Outbound.Admin, (config.URLs{"http://restate-0.restate:9070", "http://restate-1.restate:9070"}); !slices.Equal(got, want) {
		t.Errorf("outbound.admin %q, want %q", got, want)
	}
}
