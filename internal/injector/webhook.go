package injector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"
)

// maxReviewBytes bounds an AdmissionReview: the API server refuses objects over about 3 MiB,
// and a review holds the object once (twice for updates, which this webhook is not sent).
const maxReviewBytes = 7 << 20

// Webhook is the mutating admission webhook (admission/v1): it injects pods as the API
// server creates them.
type Webhook struct {
	Injector *Injector
	// Native: the API server runs native sidecars (see NativeSidecars).
	Native bool
	// NamespaceDisabled reports whether a namespace is labelled off; nil: none is.
	NamespaceDisabled func(ctx context.Context, name string) (bool, error)
	Log               *slog.Logger
}

// ServeHTTP answers one AdmissionReview. A request that is not one is answered with an HTTP
// error; a review the webhook cannot answer with a patch is answered allowed=false with a
// message saying why, which the API server shows to whoever created the pod.
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(rw, "POST an admission.k8s.io/v1 AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		http.Error(rw, "want Content-Type application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxReviewBytes))
	if err != nil {
		http.Error(rw, "reading the review: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(rw, fmt.Sprintf("want an admission.k8s.io/v1 AdmissionReview with a request: %v", err), http.StatusBadRequest)
		return
	}
	resp := w.review(r.Context(), review.Request)
	resp.UID = review.Request.UID
	out, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
	if err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	rw.Write(out)
}

func (w *Webhook) review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Kind.Kind != "Pod" || req.Kind.Group != "" || req.Operation != admissionv1.Create || req.SubResource != "" {
		return allow // the webhook configuration sends only pod creations; anything else is none of ours
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(http.StatusBadRequest, "decoding the pod: "+err.Error())
	}
	if pod.Annotations[InjectAnnotation] != "true" {
		return allow
	}
	t := Target{Namespace: pod.Namespace, Native: w.Native}
	if t.Namespace == "" {
		t.Namespace = req.Namespace
	}
	name := podName(&pod)
	log := w.Log.With("namespace", t.Namespace, "pod", name, "uid", req.UID)
	if w.NamespaceDisabled != nil {
		off, err := w.NamespaceDisabled(ctx, t.Namespace)
		if err != nil {
			// Injecting into a namespace that opted out, or running an opted-in pod without
			// its sidecar, would both be wrong: the creator (a controller) tries again.
			log.Warn("cannot read the namespace", "err", err)
			return deny(http.StatusInternalServerError, fmt.Sprintf("restate-grpc injector: cannot read namespace %s to see whether it is labelled %s=disabled: %v", t.Namespace, DisableLabel, err))
		}
		t.NamespaceDisabled = off
	}
	injected, err := w.Injector.Inject(&pod, t)
	if err != nil {
		log.Info("refused", "err", err)
		return deny(http.StatusUnprocessableEntity, "restate-grpc: "+err.Error())
	}
	patch, err := Patch(&pod, injected)
	if err != nil {
		return deny(http.StatusInternalServerError, "restate-grpc injector: "+err.Error())
	}
	log.Info("admitted", "status", injected.Annotations[StatusAnnotation], "native", t.Native, "patch_ops", strconv.Itoa(len(patch)))
	if len(patch) == 0 {
		return allow
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return deny(http.StatusInternalServerError, "restate-grpc injector: "+err.Error())
	}
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: b, PatchType: &pt}
}

func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName + "(generated)"
}

func deny(code int32, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Message: msg, Reason: metav1.StatusReasonInvalid,
	}}
}

// Patch is the JSON patch (RFC 6902) from pod to injected. Both are rendered from the same
// types, so fields this build does not know are neither in the patch nor removed by it.
func Patch(pod, injected *corev1.Pod) ([]jsonpatch.Operation, error) {
	a, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(injected)
	if err != nil {
		return nil, err
	}
	return jsonpatch.CreatePatch(a, b)
}

// NativeSidecars reports whether an API server of version v runs native sidecars
// (init containers with restartPolicy Always): beta and on by default from Kubernetes 1.29.
func NativeSidecars(v *version.Info) (bool, error) {
	major, err1 := strconv.Atoi(v.Major)
	minor, err2 := strconv.Atoi(strings.TrimRight(v.Minor, "+")) // managed clusters say "29+"
	if err := errors.Join(err1, err2); err != nil {
		return false, fmt.Errorf("API server version %q.%q: %w", v.Major, v.Minor, err)
	}
	return major > 1 || major == 1 && minor >= 29, nil
}

// Native decides native sidecars from the injector's config and, for auto, the API server's
// version.
func (c *Config) Native(serverVersion func() (*version.Info, error)) (bool, error) {
	switch c.NativeSidecars {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	v, err := serverVersion()
	if err != nil {
		return false, fmt.Errorf("nativeSidecars auto: reading the API server's version: %w", err)
	}
	return NativeSidecars(v)
}
