package testenv

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMain(m *testing.M) {
	code := m.Run()
	StopSharedKube()
	os.Exit(code)
}

func TestKubeVersion(t *testing.T) {
	k := SharedKube(t)
	if got := k.Version.GitVersion; got != KubeVersion {
		t.Errorf("server version: got %s, want %s", got, KubeVersion)
	}
}

func TestKubeMissingBinaryFails(t *testing.T) {
	t.Setenv("RESTATE_GRPC_KUBE_ASSETS", t.TempDir())
	if _, err := startKube(); err == nil || !strings.Contains(err.Error(), "run scripts/kube.sh") {
		t.Errorf("starting without binaries: got error %v, want one saying \"run scripts/kube.sh\"", err)
	}
}

// TestStartKubeStopsItsOwn starts an API server of a subtest's own next to the shared one: the
// subtest's cleanup ends its processes and removes its directory, and the shared one still serves.
func TestStartKubeStopsItsOwn(t *testing.T) {
	shared := SharedKube(t)
	var pids []int
	var dir string
	t.Run("own", func(t *testing.T) {
		k := StartKube(t)
		for _, p := range k.procs {
			pids = append(pids, p.cmd.Process.Pid)
		}
		dir = k.Dir
		if _, err := k.Client.CoreV1().Namespaces().Get(t.Context(), "default", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	if len(pids) != 2 {
		t.Fatalf("processes started: got %d, want 2 (etcd, kube-apiserver)", len(pids))
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
			t.Errorf("process %d after cleanup: got %v, want ESRCH (gone)", pid, err)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("directory %s after cleanup: got %v, want it removed", dir, err)
	}
	if _, err := shared.Client.CoreV1().Namespaces().Get(t.Context(), "default", metav1.GetOptions{}); err != nil {
		t.Errorf("the shared API server after the other one stopped: %v", err)
	}
}

func TestKubeConfigMapRoundTrip(t *testing.T) {
	k := SharedKube(t)
	cms := k.Client.CoreV1().ConfigMaps("default")
	want := map[string]string{"greeting": "hello", "yaml": "a: 1\nb: [x, y]\n"}
	if _, err := cms.Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "round-trip"},
		Data:       want,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cms.Delete(t.Context(), "round-trip", metav1.DeleteOptions{}) })
	got, err := cms.Get(t.Context(), "round-trip", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for key, v := range want {
		if got.Data[key] != v {
			t.Errorf("data[%s]: got %q, want %q", key, got.Data[key], v)
		}
	}
	if len(got.Data) != len(want) {
		t.Errorf("data: got %d keys, want %d", len(got.Data), len(want))
	}
}

// annotator is a tiny mutating webhook, registered with the injector's configuration from the
// manifests: it adds the annotation seen=true to every pod it is sent, and counts the pods that
// were not probes.
type annotator struct{ pods atomic.Int32 }

const seenAnnotation = "test.restate-grpc.io/seen"

func (a *annotator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "want an AdmissionReview", http.StatusBadRequest)
		return
	}
	var pod corev1.Pod
	if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if pod.Annotations["restate-grpc.test/probe"] == "" {
		a.pods.Add(1)
	}
	// The pod has annotations (the webhook's match condition asks for one); "~1" is "/" in a
	// JSON pointer.
	patch := `[{"op":"add","path":"/metadata/annotations/test.restate-grpc.io~1seen","value":"true"}]`
	pt := admissionv1.PatchTypeJSONPatch
	review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true, Patch: []byte(patch), PatchType: &pt}
	review.Request = nil
	json.NewEncoder(w).Encode(review)
}

func TestKubeRegisterWebhook(t *testing.T) {
	k := SharedKube(t)
	handler := &annotator{}
	srv := httptest.NewTLSServer(handler)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})

	const ns = "testenv-annotator"
	if _, err := k.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: ns},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	k.RegisterWebhook(t, Webhook{
		Config: InjectorWebhookConfig(t), URL: srv.URL + "/mutate", CABundle: ca, Namespace: ns,
		Seen: func(p *corev1.Pod) bool { return p.Annotations[seenAnnotation] == "true" },
	})

	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        string // the stored pod's seen annotation
	}{
		{"annotated", map[string]string{"restate-grpc.io/inject": "true"}, "true"},
		{"inject-false", map[string]string{"restate-grpc.io/inject": "false"}, ""},
		{"no-annotations", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pods := k.Client.CoreV1().Pods(ns)
			_, err := pods.Create(t.Context(), &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: tc.name, Annotations: tc.annotations},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app"}}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			stored, err := pods.Get(t.Context(), tc.name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := stored.Annotations[seenAnnotation]; got != tc.want {
				t.Errorf("stored pod's %s: got %q, want %q", seenAnnotation, got, tc.want)
			}
		})
	}
	if got := handler.pods.Load(); got != 1 {
		t.Errorf("pods (not probes) the webhook was sent: got %d, want 1", got)
	}
}
