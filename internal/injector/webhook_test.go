package injector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/version"
)

func review(t *testing.T, url string, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	t.Helper()
	b, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  req,
	})
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST: %s %s", resp.Status, body)
	}
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" {
		t.Errorf("got %s %s, want admission.k8s.io/v1 AdmissionReview", out.APIVersion, out.Kind)
	}
	if out.Response == nil || out.Response.UID != req.UID {
		t.Fatalf("got response %+v, want one with uid %s", out.Response, req.UID)
	}
	return out.Response
}

func podRequest(t *testing.T, uid string, pod *corev1.Pod) *admissionv1.AdmissionRequest {
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return &admissionv1.AdmissionRequest{
		UID:       types.UID(uid),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "shop",
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}
}

// TestWebhook answers AdmissionReviews over a real HTTP connection: the patch it returns,
// applied to the pod, gives the pod Inject gives.
func TestWebhook(t *testing.T) {
	in := testInjector(t, "")
	disabled := map[string]bool{"legacy": true}
	wh := &Webhook{Injector: in, Native: true, Log: slog.New(slog.DiscardHandler),
		NamespaceDisabled: func(_ context.Context, ns string) (bool, error) {
			if ns == "broken" {
				return false, errors.New("connection refused")
			}
			return disabled[ns], nil
		}}
	srv := httptest.NewServer(wh)
	defer srv.Close()

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "checkout-", Annotations: map[string]string{
			InjectAnnotation: "true", "restate-grpc.io/outbound": "routes: [{match: orders.v1.OrderService/*}]"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example/checkout:1.0"}}},
	}
	tests := []struct {
		name       string
		req        *admissionv1.AdmissionRequest
		wantStatus string // the status annotation after the patch; "" for no patch
		wantDenied string // a part of the message
	}{
		{"injected", podRequest(t, "u1", pod), StatusInjected, ""},
		{"namespace labelled off", func() *admissionv1.AdmissionRequest { r := podRequest(t, "u2", pod); r.Namespace = "legacy"; return r }(),
			"skipped: namespace legacy is labelled restate-grpc.io/inject=disabled", ""},
		{"namespace unreadable", func() *admissionv1.AdmissionRequest { r := podRequest(t, "u3", pod); r.Namespace = "broken"; return r }(),
			"", "cannot read namespace broken"},
		{"not annotated", podRequest(t, "u4", &corev1.Pod{Spec: pod.Spec}), "", ""},
		{"bad annotation", podRequest(t, "u5", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", Annotations: map[string]string{InjectAnnotation: "true", "restate-grpc.io/app-port": "http"}}, Spec: pod.Spec}),
			"", `restate-grpc: restate-grpc.io/app-port: want a port 1-65535, got "http"`},
		{"not a pod", func() *admissionv1.AdmissionRequest {
			r := podRequest(t, "u6", pod)
			r.Kind = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
			return r
		}(), "", ""},
		{"an update", func() *admissionv1.AdmissionRequest {
			r := podRequest(t, "u7", pod)
			r.Operation = admissionv1.Update
			return r
		}(), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := review(t, srv.URL+"/mutate", tt.req)
			if tt.wantDenied != "" {
				if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, tt.wantDenied) {
					t.Fatalf("got allowed %v, result %+v, want denied with %q", resp.Allowed, resp.Result, tt.wantDenied)
				}
				return
			}
			if !resp.Allowed {
				t.Fatalf("got denied: %+v", resp.Result)
			}
			if tt.wantStatus == "" {
				if len(resp.Patch) != 0 {
					t.Errorf("got patch %s, want none", resp.Patch)
				}
				return
			}
			if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
				t.Fatalf("got patch type %v, want JSONPatch", resp.PatchType)
			}
			p, err := jsonpatch.DecodePatch(resp.Patch)
			if err != nil {
				t.Fatal(err)
			}
			patched, err := p.Apply(tt.req.Object.Raw)
			if err != nil {
				t.Fatalf("applying the patch to the pod the API server sent: %v", err)
			}
			var got corev1.Pod
			if err := json.Unmarshal(patched, &got); err != nil {
				t.Fatal(err)
			}
			if s := got.Annotations[StatusAnnotation]; s != tt.wantStatus {
				t.Errorf("status: got %q, want %q", s, tt.wantStatus)
			}
			want, err := in.Inject(pod, Target{Namespace: tt.req.Namespace, Native: true, NamespaceDisabled: disabled[tt.req.Namespace]})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want, &got); d != "" {
				t.Errorf("patched pod differs from Inject's (-Inject +patched):\n%s", d)
			}
		})
	}
}

func TestWebhookBadRequests(t *testing.T) {
	srv := httptest.NewServer(&Webhook{Injector: testInjector(t, ""), Log: slog.New(slog.DiscardHandler)})
	defer srv.Close()
	tests := []struct {
		name, method, ctype, body string
		want                      int
	}{
		{"GET", http.MethodGet, "", "", http.StatusMethodNotAllowed},
		{"not JSON", http.MethodPost, "text/plain", "{}", http.StatusUnsupportedMediaType},
		{"no request", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
		{"garbage", http.MethodPost, "application/json", "{", http.StatusBadRequest},
		{"too big", http.MethodPost, "application/json", `{"x":"` + strings.Repeat("a", maxReviewBytes) + `"}`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL, strings.NewReader(tt.body))
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("got %s, want %d", resp.Status, tt.want)
			}
		})
	}
}

func TestNativeSidecars(t *testing.T) {
	tests := []struct {
		major, minor string
		want         bool
		wantErr      bool
	}{
		{"1", "28", false, false},
		{"1", "29", true, false},
		{"1", "37", true, false},
		{"1", "29+", true, false}, // managed clusters
		{"1", "28+", false, false},
		{"2", "0", true, false},
		{"1", "", false, true},
	}
	for _, tt := range tests {
		got, err := NativeSidecars(&version.Info{Major: tt.major, Minor: tt.minor})
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("NativeSidecars(%s.%s) = %v, %v; want %v, error %v", tt.major, tt.minor, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestConfigNative: nativeSidecars auto asks the API server's version; true and false do not.
func TestConfigNative(t *testing.T) {
	old := func() (*version.Info, error) { return &version.Info{Major: "1", Minor: "28"}, nil }
	down := func() (*version.Info, error) { return nil, errors.New("connection refused") }
	tests := []struct {
		setting string
		version func() (*version.Info, error)
		want    bool
		wantErr bool
	}{
		{"auto", old, false, false},
		{"auto", func() (*version.Info, error) { return &version.Info{Major: "1", Minor: "37"}, nil }, true, false},
		{"auto", down, false, true},
		{"true", down, true, false},
		{"false", down, false, false},
	}
	for _, tt := range tests {
		cfg, err := ParseConfig([]byte("nativeSidecars: " + tt.setting))
		if err != nil {
			t.Fatal(err)
		}
		got, err := cfg.Native(tt.version)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("nativeSidecars %s: got %v, %v; want %v, error %v", tt.setting, got, err, tt.want, tt.wantErr)
		}
	}
	if _, err := ParseConfig([]byte("nativeSidecars: maybe")); err == nil || !strings.Contains(err.Error(), `nativeSidecars: "maybe" is not one of auto, true, false`) {
		t.Errorf("nativeSidecars maybe: got %v, want an error naming the field", err)
	}
}
