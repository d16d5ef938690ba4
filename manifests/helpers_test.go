package manifests_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

func deref[T any](p *T) T {
	if p == nil {
		return *new(T)
	}
	return *p
}

func ptr[T any](v T) *T { return &v }

// equalJSON compares what two values look like as JSON, as the API server sees them (an empty
// and a missing list are the same).
func equalJSON(a, b any) bool {
	var x, y any
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	json.Unmarshal(ja, &x)
	json.Unmarshal(jb, &y)
	return reflect.DeepEqual(x, y)
}

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// labelsMatch reports whether a selector selects pods with these labels (an empty or missing
// selector does not count: it would select everything).
func labelsMatch(podLabels map[string]string) func(*metav1.LabelSelector) bool {
	return func(s *metav1.LabelSelector) bool {
		if s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0) {
			return false
		}
		sel, err := metav1.LabelSelectorAsSelector(s)
		return err == nil && sel.Matches(labels.Set(podLabels))
	}
}

func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func servicePort(s *corev1.Service, name string) int32 {
	for _, p := range s.Spec.Ports {
		if p.Name == name {
			return p.Port
		}
	}
	return 0
}

func envFieldRef(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			return e.ValueFrom.FieldRef.FieldPath
		}
	}
	return ""
}

// probe is an HTTP probe as "SCHEME port path".
func probe(p *corev1.Probe) string {
	if p == nil || p.HTTPGet == nil {
		return ""
	}
	return fmt.Sprintf("%s %s %s", p.HTTPGet.Scheme, p.HTTPGet.Port.String(), p.HTTPGet.Path)
}

// configMapVolume is the ConfigMap mounted at path in container c.
func configMapVolume(spec corev1.PodSpec, c corev1.Container, path string) string {
	for _, m := range c.VolumeMounts {
		if m.MountPath != path {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				return v.ConfigMap.Name
			}
		}
	}
	return ""
}

const markAnnotation = "test.restate-grpc.io/marked"

// serveMarker serves a mutating webhook that marks every pod it is sent with markAnnotation; it
// returns the webhook's URL and the CA (PEM) that signed it.
func serveMarker(t *testing.T) (url string, ca []byte) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "want an AdmissionReview", http.StatusBadRequest)
			return
		}
		// The match condition admits only annotated pods, so the annotations map exists;
		// "~1" is "/" in a JSON pointer.
		patch := `[{"op":"add","path":"/metadata/annotations/test.restate-grpc.io~1marked","value":"true"}]`
		pt := admissionv1.PatchTypeJSONPatch
		review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true, Patch: []byte(patch), PatchType: &pt}
		review.Request = nil
		json.NewEncoder(w).Encode(review)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/mutate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

func createNamespace(t *testing.T, k *testenv.Kube, name string) {
	t.Helper()
	_, err := k.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// dynamicClients are the untyped client and the kind-to-resource mapping for the shared API
// server, made once: discovery takes dozens of requests.
var dynamicClients struct {
	sync.Mutex
	kube   *testenv.Kube
	client dynamic.Interface
	mapper meta.RESTMapper
}

func resourceFor(k *testenv.Kube, o object) (dynamic.ResourceInterface, error) {
	dc := &dynamicClients
	dc.Lock()
	defer dc.Unlock()
	if dc.kube != k {
		c, err := dynamic.NewForConfig(k.Config)
		if err != nil {
			return nil, err
		}
		dc.kube, dc.client = k, c
		dc.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(k.Client.Discovery()))
	}
	m, err := dc.mapper.RESTMapping(o.GVK.GroupKind(), o.GVK.Version)
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return dc.client.Resource(m.Resource).Namespace(o.Namespace), nil
	}
	return dc.client.Resource(m.Resource), nil
}

// apply is a server-side apply of o, with strict field validation (unknown fields fail on the
// server too), as a dry run or for real.
func apply(t *testing.T, k *testenv.Kube, o object, dryRun bool) error {
	r, err := resourceFor(k, o)
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: "restate-grpc-manifests-test", FieldValidation: "Strict", Force: ptr(true)}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = r.Patch(t.Context(), o.Name, types.ApplyPatchType, o.JSON, opts)
	return err
}

func deleteObject(k *testenv.Kube, o object) error {
	r, err := resourceFor(k, o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Delete(ctx, o.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// waitAccess asks the API server whether user may do verb on a resource, until it answers want
// or 10s have passed (the authorizer learns of role changes through a watch), and returns its
// last answer.
func waitAccess(k *testenv.Kube, user, verb, group, resource, namespace, name string, want bool) (bool, error) {
	ns := strings.Split(user, ":")
	groups := []string{"system:authenticated", "system:serviceaccounts"}
	if len(ns) == 4 {
		groups = append(groups, "system:serviceaccounts:"+ns[2])
	}
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource, Namespace: namespace, Name: name},
	}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got, err := k.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		cancel()
		if err != nil {
			return false, err
		}
		if got.Status.Allowed == want || time.Now().After(deadline) {
			return got.Status.Allowed, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}
