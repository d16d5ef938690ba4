package testenv

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Manifest is one object of a kustomize build.
type Manifest struct {
	GVK             schema.GroupVersionKind
	Name, Namespace string
	JSON            []byte
	// Object is the object decoded strictly into its k8s.io/api type (a field the type lacks
	// fails the build); nil for kinds k8s.io/api does not have (cert-manager's).
	Object runtime.Object
}

func (m Manifest) String() string { return fmt.Sprintf("%s %s/%s", m.GVK.Kind, m.Namespace, m.Name) }

var strictDecoder = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// Kustomize builds the kustomization in dir as `kubectl apply -k` would, and decodes every
// object of a Kubernetes kind strictly.
func Kustomize(t testing.TB, dir string) []Manifest {
	t.Helper()
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []Manifest
	for _, r := range rm.Resources() {
		js, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		g := r.GetGvk()
		m := Manifest{GVK: schema.GroupVersionKind{Group: g.Group, Version: g.Version, Kind: g.Kind}, Name: r.GetName(), Namespace: r.GetNamespace(), JSON: js}
		if scheme.Scheme.Recognizes(m.GVK) {
			if m.Object, _, err = strictDecoder.Decode(js, nil, nil); err != nil {
				t.Errorf("%s: %s does not decode strictly: %v", dir, m, err)
			}
		}
		out = append(out, m)
	}
	return out
}
