package manifests_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/injector"
	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopSharedKube()
	os.Exit(code)
}

// kustomizations are every directory a user applies with kubectl apply -k.
var kustomizations = []string{"injector", "injector/cert-manager", "restate", "restate-cluster", "examples", "monitoring"}

// object is one object a kustomization builds, decoded.
type object struct {
	testenv.Manifest
	// typed is Manifest.Object (the k8s.io/api type), or for cert-manager's kinds, which are not
	// in k8s.io/api, one of the certManager types below.
	typed any
}

// certManager types hold the fields of cert-manager.io/v1 that the manifests use: without
// cert-manager's Go module (or its CRDs in the API server) this is the strictest decoding there
// is, and it catches misspelled fields.
type certManagerIssuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SelfSigned *struct{} `json:"selfSigned,omitempty"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca,omitempty"`
	} `json:"spec"`
}

type certManagerCertificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		IsCA       bool     `json:"isCA"`
		CommonName string   `json:"commonName"`
		SecretName string   `json:"secretName"`
		DNSNames   []string `json:"dnsNames"`
		IssuerRef  struct {
			Name  string `json:"name"`
			Kind  string `json:"kind"`
			Group string `json:"group"`
		} `json:"issuerRef"`
		Duration    string `json:"duration"`
		RenewBefore string `json:"renewBefore"`
		PrivateKey  struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
		Usages []string `json:"usages"`
	} `json:"spec"`
}

// decodeCertManager decodes cert-manager's kinds strictly into the types above.
func decodeCertManager(js []byte, gvk schema.GroupVersionKind) (any, error) {
	var into any
	switch {
	case gvk.Group != "cert-manager.io":
		return nil, fmt.Errorf("%s is neither in k8s.io/api nor cert-manager's", gvk)
	case gvk.Kind == "Issuer":
		into = &certManagerIssuer{}
	case gvk.Kind == "Certificate":
		into = &certManagerCertificate{}
	default:
		return nil, fmt.Errorf("no decoding for %s", gvk)
	}
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	return into, d.Decode(into)
}

// build runs kustomize on dir (testenv.Kustomize decodes the k8s.io/api kinds strictly) and
// decodes cert-manager's kinds strictly too.
func build(t testing.TB, dir string) []object {
	t.Helper()
	var objs []object
	for _, m := range testenv.Kustomize(t, dir) {
		o := object{Manifest: m, typed: m.Object}
		if m.Object == nil {
			var err error
			if o.typed, err = decodeCertManager(m.JSON, m.GVK); err != nil {
				t.Errorf("%s: %s does not decode strictly: %v", dir, o, err)
			}
		}
		objs = append(objs, o)
	}
	return objs
}

// one returns the only object of a kind (and name, if not empty), as its type T.
func one[T any](t *testing.T, objs []object, kind, name string) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if o.GVK.Kind == kind && (name == "" || o.Name == name) {
			v, ok := o.typed.(T)
			if !ok {
				t.Fatalf("%s: got %T, want %T", o, o.typed, *new(T))
			}
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s %q: got %d objects, want 1", kind, name, len(found))
	}
	return found[0]
}

func kinds(objs []object) []string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.GVK.Kind+"/"+o.Name)
	}
	slices.Sort(ks)
	return ks
}

func TestKustomizationsBuild(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want []string
	}{
		{"injector", []string{
			"ClusterRole/restate-grpc-injector", "ClusterRoleBinding/restate-grpc-injector", "ConfigMap/restate-grpc-injector-config-*",
			"Deployment/restate-grpc-injector", "MutatingWebhookConfiguration/restate-grpc-injector", "Namespace/restate-grpc-system",
			"PodDisruptionBudget/restate-grpc-injector", "Role/restate-grpc-injector", "RoleBinding/restate-grpc-injector",
			"Service/restate-grpc-injector", "ServiceAccount/restate-grpc-injector",
		}},
		{"injector/cert-manager", []string{
			"Certificate/restate-grpc-injector", "Certificate/restate-grpc-injector-ca", "ClusterRole/restate-grpc-injector",
			"ClusterRoleBinding/restate-grpc-injector", "ConfigMap/restate-grpc-injector-config-*", "Deployment/restate-grpc-injector",
			"Issuer/restate-grpc-injector-ca", "Issuer/restate-grpc-selfsigned",
			"MutatingWebhookConfiguration/restate-grpc-injector", "Namespace/restate-grpc-system",
			"PodDisruptionBudget/restate-grpc-injector", "Service/restate-grpc-injector", "ServiceAccount/restate-grpc-injector",
		}},
		{"restate", []string{"Namespace/restate", "Service/restate", "Service/restate-cluster", "Service/restate-nodes", "StatefulSet/restate"}},
		{"restate-cluster", []string{"Namespace/restate", "PodDisruptionBudget/restate", "Service/restate", "Service/restate-cluster",
			"Service/restate-nodes", "StatefulSet/restate"}},
		{"examples", []string{"Deployment/orders", "Deployment/shop", "Namespace/restate-grpc-examples", "Service/orders"}},
		{"monitoring", []string{"ConfigMap/restate-grpc-alerts"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			got := kinds(build(t, tc.dir))
			// The generated ConfigMap's name ends in a hash of its content.
			for i, k := range got {
				if strings.HasPrefix(k, "ConfigMap/restate-grpc-injector-config-") {
					got[i] = "ConfigMap/restate-grpc-injector-config-*"
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("objects:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// errorRecorder is a testing.TB whose Errorf records instead of failing, to see what build
// reports.
type errorRecorder struct {
	testing.TB
	errs []string
}

func (r *errorRecorder) Errorf(format string, a ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, a...))
}

// TestBuildRefusesUnknownFields builds kustomizations with a misspelled field: build must say so,
// for the k8s.io/api kinds and cert-manager's alike.
func TestBuildRefusesUnknownFields(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, field string
	}{
		{"core", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {prots: []}\n", "spec.prots"},
		{"apps", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 2}\n", "spec.replica"},
		{"cert-manager", "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: x}\nspec: {dnsName: [a]}\n", "dnsName"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range map[string]string{"kustomization.yaml": "resources: [object.yaml]\n", "object.yaml": tc.yaml} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r := &errorRecorder{TB: t}
			build(r, dir)
			if len(r.errs) != 1 || !strings.Contains(r.errs[0], "unknown field") || !strings.Contains(r.errs[0], tc.field) {
				t.Errorf("building an object with the misspelled field %s: got errors %q, want one naming it an unknown field", tc.field, r.errs)
			}
		})
	}
}

// TestInjectorWebhookConfiguration checks the webhook against the contract (ISSUE11.md), in both
// variants: they differ only in who writes the caBundle.
func TestInjectorWebhookConfiguration(t *testing.T) {
	for _, dir := range []string{"injector", "injector/cert-manager"} {
		t.Run(dir, func(t *testing.T) {
			objs := build(t, dir)
			mwc := one[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "MutatingWebhookConfiguration", "restate-grpc-injector")
			svc := one[*corev1.Service](t, objs, "Service", "restate-grpc-injector")
			if len(mwc.Webhooks) != 1 {
				t.Fatalf("webhooks: got %d, want 1", len(mwc.Webhooks))
			}
			w := mwc.Webhooks[0]
			ref := w.ClientConfig.Service
			if ref == nil {
				t.Fatal("clientConfig.service: got none, want the injector's Service")
			}
			var svcPort int32
			for _, p := range svc.Spec.Ports {
				if ref.Port != nil && p.Port == *ref.Port {
					svcPort = p.Port
				}
			}
			for _, c := range []struct {
				field     string
				got, want any
			}{
				{"name", w.Name, "inject.restate-grpc.io"},
				{"admissionReviewVersions", w.AdmissionReviewVersions, []string{"v1"}},
				{"clientConfig.service.name", ref.Name, svc.Name},
				{"clientConfig.service.namespace", ref.Namespace, svc.Namespace},
				{"clientConfig.service.namespace", ref.Namespace, "restate-grpc-system"},
				{"clientConfig.service.path", deref(ref.Path), "/mutate"},
				{"clientConfig.service.port", deref(ref.Port), int32(443)},
				{"clientConfig.service.port is a port of the Service", svcPort, int32(443)},
				{"clientConfig.url", deref(w.ClientConfig.URL), ""},
				{"rules", w.Rules, []admissionregistrationv1.RuleWithOperations{{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
						Scope: ptr(admissionregistrationv1.NamespacedScope)},
				}}},
				{"failurePolicy", deref(w.FailurePolicy), admissionregistrationv1.Fail},
				{"sideEffects", deref(w.SideEffects), admissionregistrationv1.SideEffectClassNone},
				{"timeoutSeconds", deref(w.TimeoutSeconds), int32(10)},
				{"reinvocationPolicy", deref(w.ReinvocationPolicy), admissionregistrationv1.IfNeededReinvocationPolicy},
				{"namespaceSelector", w.NamespaceSelector, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", "kube-public", "restate-grpc-system"}},
					{Key: "restate-grpc.io/inject", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"disabled"}},
				}}},
				{"matchConditions", len(w.MatchConditions), 1},
			} {
				if !equalJSON(c.got, c.want) {
					t.Errorf("%s: got %s, want %s", c.field, jsonString(c.got), jsonString(c.want))
				}
			}
			// What the match condition selects is checked against the API server, in
			// TestInjectorWebhookSelects.
		})
	}
}

// TestInjectorWebhookSelects registers the manifests' webhook with the real API server, in front
// of a handler that marks the pods it is sent, and creates pods (dry run: admission runs, nothing
// is stored) in and out of the namespaces and with and without the annotation the contract names.
func TestInjectorWebhookSelects(t *testing.T) {
	k := testenv.SharedKube(t)
	url, ca := serveMarker(t)
	k.RegisterWebhook(t, testenv.Webhook{
		Config: testenv.InjectorWebhookConfig(t), URL: url, CABundle: ca,
		Seen: func(p *corev1.Pod) bool { return p.Annotations[markAnnotation] != "" },
	})
	ctx := t.Context()
	for ns, labels := range map[string]map[string]string{
		"selects-plain":       nil,
		"selects-disabled":    {"restate-grpc.io/inject": "disabled"},
		"selects-enabled":     {"restate-grpc.io/inject": "enabled"},
		"restate-grpc-system": nil,
	} {
		_, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	inject := map[string]string{"restate-grpc.io/inject": "true"}
	for _, tc := range []struct {
		name, namespace string
		annotations     map[string]string
		want            bool // the webhook was called
	}{
		{"annotated", "selects-plain", inject, true},
		{"annotated-in-labelled-namespace", "selects-enabled", inject, true},
		{"inject-false", "selects-plain", map[string]string{"restate-grpc.io/inject": "false"}, false},
		{"inject-capital-true", "selects-plain", map[string]string{"restate-grpc.io/inject": "True"}, false},
		{"other-annotations", "selects-plain", map[string]string{"example.com/x": "true"}, false},
		{"no-annotations", "selects-plain", nil, false},
		{"namespace-disabled", "selects-disabled", inject, false},
		{"kube-system", "kube-system", inject, false},
		{"kube-public", "kube-public", inject, false},
		{"injector-namespace", "restate-grpc-system", inject, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: tc.name, Namespace: tc.namespace, Annotations: tc.annotations},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app"}}},
			}
			got, err := k.Client.CoreV1().Pods(tc.namespace).Create(t.Context(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil {
				t.Fatal(err)
			}
			if called := got.Annotations[markAnnotation] != ""; called != tc.want {
				t.Errorf("webhook called for pod %s/%s with annotations %v: got %v, want %v", tc.namespace, tc.name, tc.annotations, called, tc.want)
			}
		})
	}
}

func TestInjectorDeployment(t *testing.T) {
	for _, tc := range []struct {
		dir      string
		wantArgs []string
	}{
		{"injector", []string{"injector", "--config=/etc/restate-grpc/config.yaml", "--listen=:8443", "--self-signed",
			"--secret-name=restate-grpc-injector-tls", "--webhook-config=restate-grpc-injector", "--service=restate-grpc-injector"}},
		{"injector/cert-manager", []string{"injector", "--config=/etc/restate-grpc/config.yaml", "--listen=:8443",
			"--tls-cert-dir=/etc/restate-grpc/tls"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			objs := build(t, tc.dir)
			d := one[*appsv1.Deployment](t, objs, "Deployment", "restate-grpc-injector")
			pdb := one[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "restate-grpc-injector")
			svc := one[*corev1.Service](t, objs, "Service", "restate-grpc-injector")
			cm := one[*corev1.ConfigMap](t, objs, "ConfigMap", "")
			pod := d.Spec.Template
			if len(pod.Spec.Containers) != 1 {
				t.Fatalf("containers: got %d, want 1", len(pod.Spec.Containers))
			}
			c := pod.Spec.Containers[0]
			podLabels := labelsMatch(pod.Labels)
			var anti string
			if a := pod.Spec.Affinity; a != nil && a.PodAntiAffinity != nil && len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) > 0 {
				term := a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
				if podLabels(term.LabelSelector) {
					anti = term.TopologyKey
				}
			}
			conf, err := injector.ParseConfig([]byte(cm.Data["config.yaml"]))
			if err != nil {
				t.Fatalf("config.yaml: %v", err)
			}
			for _, ch := range []struct {
				field     string
				got, want any
			}{
				{"replicas", deref(d.Spec.Replicas), int32(2)},
				{"selector matches the pod's labels", podLabels(d.Spec.Selector), true},
				{"pod anti-affinity on the pod's own labels, by topology", anti, "kubernetes.io/hostname"},
				{"PodDisruptionBudget minAvailable", pdb.Spec.MinAvailable.String(), "1"},
				{"PodDisruptionBudget selects the pods", podLabels(pdb.Spec.Selector), true},
				{"Service selects the pods", podLabels(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector}), true},
				{"Service port 443 targets", svc.Spec.Ports[0].TargetPort.String(), "https"},
				{"container port https", containerPort(c, "https"), int32(8443)},
				{"command", c.Command, []string{"/usr/local/bin/sidecar"}},
				{"args", c.Args, tc.wantArgs},
				{"env POD_NAMESPACE", envFieldRef(c, "POD_NAMESPACE"), "metadata.namespace"},
				{"readiness probe", probe(c.ReadinessProbe), "HTTPS https /readyz"},
				{"liveness probe", probe(c.LivenessProbe), "HTTPS https /healthz"},
				{"serviceAccountName", pod.Spec.ServiceAccountName, "restate-grpc-injector"},
				{"config volume", configMapVolume(pod.Spec, c, "/etc/restate-grpc"), cm.Name},
				{"config.yaml's image (what it injects) is the injector's", conf.Image, c.Image},
				{"image", c.Image, "ghcr.io/restate-grpc/sidecar:v0.1.0"},
				{"readOnlyRootFilesystem", deref(c.SecurityContext.ReadOnlyRootFilesystem), true},
				{"allowPrivilegeEscalation", deref(c.SecurityContext.AllowPrivilegeEscalation), false},
				{"runAsNonRoot", deref(pod.Spec.SecurityContext.RunAsNonRoot), true},
			} {
				if !equalJSON(ch.got, ch.want) {
					t.Errorf("%s: got %s, want %s", ch.field, jsonString(ch.got), jsonString(ch.want))
				}
			}
		})
	}
}

// TestInjectorRBAC checks the roles statically, then binds them for real and asks the API server
// what the injector's ServiceAccount may do (SubjectAccessReview): exactly what the contract
// lists in the self-signed variant, and with cert-manager (which writes the Secret and the
// caBundle itself) only reading namespaces.
func TestInjectorRBAC(t *testing.T) {
	const sa = "system:serviceaccount:restate-grpc-system:restate-grpc-injector"
	type access struct {
		verb, group, resource, namespace, name string
	}
	mwc := func(verb, name string) access {
		return access{verb, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", name}
	}
	secret := func(verb, ns, name string) access { return access{verb, "", "secrets", ns, name} }
	namespaces := func(verb, name string) access { return access{verb, "", "namespaces", "", name} }
	denied := []access{
		mwc("update", "other"), mwc("delete", "restate-grpc-injector"), mwc("list", ""), mwc("create", ""),
		namespaces("list", ""), namespaces("update", "default"),
		secret("get", "restate-grpc-system", "other"), secret("list", "restate-grpc-system", ""),
		secret("delete", "restate-grpc-system", "restate-grpc-injector-tls"),
		secret("create", "default", ""), secret("get", "default", "restate-grpc-injector-tls"),
	}
	selfSignedOnly := []access{
		mwc("get", "restate-grpc-injector"), mwc("update", "restate-grpc-injector"),
		secret("get", "restate-grpc-system", "restate-grpc-injector-tls"),
		secret("update", "restate-grpc-system", "restate-grpc-injector-tls"),
		secret("create", "restate-grpc-system", ""),
	}
	both := []access{namespaces("get", "default"), namespaces("get", "orders")}
	k := testenv.SharedKube(t)
	createNamespace(t, k, "restate-grpc-system")
	readNamespaces := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}}
	for _, tc := range []struct {
		dir                      string
		clusterRules, namespaced []rbacv1.PolicyRule // nil: no Role
		allowed, refused         []access
	}{
		{"injector",
			[]rbacv1.PolicyRule{
				{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, ResourceNames: []string{"restate-grpc-injector"}, Verbs: []string{"get", "update"}},
				readNamespaces,
			},
			[]rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"restate-grpc-injector-tls"}, Verbs: []string{"get", "update"}},
				{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
			},
			slices.Concat(both, selfSignedOnly), denied},
		{"injector/cert-manager", []rbacv1.PolicyRule{readNamespaces}, nil, both, slices.Concat(denied, selfSignedOnly)},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			objs := build(t, tc.dir)
			if got := one[*rbacv1.ClusterRole](t, objs, "ClusterRole", "restate-grpc-injector").Rules; !equalJSON(got, tc.clusterRules) {
				t.Errorf("ClusterRole rules: got %s, want %s", jsonString(got), jsonString(tc.clusterRules))
			}
			var roles []*rbacv1.Role
			for _, o := range objs {
				if r, ok := o.typed.(*rbacv1.Role); ok {
					roles = append(roles, r)
				}
			}
			switch {
			case tc.namespaced == nil && len(roles) > 0:
				t.Errorf("Roles: got %d, want none", len(roles))
			case tc.namespaced != nil && (len(roles) != 1 || !equalJSON(roles[0].Rules, tc.namespaced) || roles[0].Namespace != "restate-grpc-system"):
				t.Errorf("Roles: got %s, want one in restate-grpc-system with rules %s", jsonString(roles), jsonString(tc.namespaced))
			}
			d := one[*appsv1.Deployment](t, objs, "Deployment", "restate-grpc-injector")
			if got, want := "system:serviceaccount:"+d.Namespace+":"+d.Spec.Template.Spec.ServiceAccountName, sa; got != want {
				t.Errorf("the Deployment's service account: got %s, want %s", got, want)
			}
			// Bind for real (the other tests' apply is a dry run), and unbind before the next
			// variant: applying one over the other would leave the first one's Role behind.
			var rbac []object
			for _, o := range objs {
				if o.GVK.Group == rbacv1.GroupName || o.GVK.Kind == "ServiceAccount" {
					rbac = append(rbac, o)
				}
			}
			for _, o := range rbac {
				if err := apply(t, k, o, false); err != nil {
					t.Fatalf("applying %s: %v", o, err)
				}
			}
			t.Cleanup(func() {
				for _, o := range rbac {
					if err := deleteObject(k, o); err != nil {
						t.Errorf("deleting %s: %v", o, err)
					}
				}
			})
			for _, c := range []struct {
				want bool
				list []access
			}{{true, tc.allowed}, {false, tc.refused}} {
				for _, a := range c.list {
					// The authorizer sees new roles through a watch: wait for it to agree.
					got, err := waitAccess(k, sa, a.verb, a.group, a.resource, a.namespace, a.name, c.want)
					if err != nil {
						t.Fatal(err)
					}
					if got != c.want {
						t.Errorf("%s %s %s/%s in namespace %q: got allowed=%v, want %v", a.verb, a.resource, a.group, a.name, a.namespace, got, c.want)
					}
				}
			}
		})
	}
}

// TestCertManagerVariant follows the chain from the webhook configuration's annotation to the
// Secret the Deployment serves: the serving Certificate for the Service's names, signed by a CA
// Issuer whose CA a selfSigned Issuer signed (so a renewed serving certificate keeps the bundle).
func TestCertManagerVariant(t *testing.T) {
	objs := build(t, "injector/cert-manager")
	mwc := one[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "MutatingWebhookConfiguration", "restate-grpc-injector")
	svc := one[*corev1.Service](t, objs, "Service", "restate-grpc-injector")
	d := one[*appsv1.Deployment](t, objs, "Deployment", "restate-grpc-injector")
	from := mwc.Annotations["cert-manager.io/inject-ca-from"]
	ns, name, _ := strings.Cut(from, "/")
	if ns != svc.Namespace {
		t.Fatalf("cert-manager.io/inject-ca-from: got %q, want a Certificate in %s", from, svc.Namespace)
	}
	cert := one[*certManagerCertificate](t, objs, "Certificate", name)
	caIssuer := one[*certManagerIssuer](t, objs, "Issuer", cert.Spec.IssuerRef.Name)
	if caIssuer.Spec.CA == nil {
		t.Fatalf("the serving Certificate's Issuer %s: got %s, want a CA Issuer", caIssuer.Name, jsonString(caIssuer.Spec))
	}
	var caCert *certManagerCertificate
	for _, o := range objs {
		if c, ok := o.typed.(*certManagerCertificate); ok && c.Spec.SecretName == caIssuer.Spec.CA.SecretName {
			caCert = c
		}
	}
	if caCert == nil {
		t.Fatalf("no Certificate writes the CA Issuer's Secret %s", caIssuer.Spec.CA.SecretName)
	}
	root := one[*certManagerIssuer](t, objs, "Issuer", caCert.Spec.IssuerRef.Name)
	var tlsSecret, tlsMount string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			tlsSecret = v.Secret.SecretName
			for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
				if m.Name == v.Name {
					tlsMount = m.MountPath
				}
			}
		}
	}
	for _, c := range []struct {
		field     string
		got, want any
	}{
		// The names the API server dials for a webhook's service reference, and the full one.
		{"serving Certificate dnsNames", cert.Spec.DNSNames, []string{
			svc.Name + "." + svc.Namespace + ".svc", svc.Name + "." + svc.Namespace + ".svc.cluster.local"}},
		{"serving Certificate isCA", cert.Spec.IsCA, false},
		{"serving Certificate usages", cert.Spec.Usages, []string{"server auth", "digital signature"}},
		{"serving Certificate issuer", cert.Spec.IssuerRef, map[string]string{"name": caIssuer.Name, "kind": "Issuer", "group": "cert-manager.io"}},
		{"CA Certificate isCA", caCert.Spec.IsCA, true},
		{"CA Certificate issuer", caCert.Spec.IssuerRef, map[string]string{"name": root.Name, "kind": "Issuer", "group": "cert-manager.io"}},
		{"the CA's Issuer is self-signed", root.Spec.SelfSigned != nil, true},
		{"namespaces", []string{caIssuer.Namespace, caCert.Namespace, root.Namespace}, []string{svc.Namespace, svc.Namespace, svc.Namespace}},
		{"the Deployment mounts the serving Certificate's Secret", tlsSecret, cert.Spec.SecretName},
		{"--tls-cert-dir is the Secret's mount", slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--tls-cert-dir="+tlsMount), true},
		{"replicas", deref(d.Spec.Replicas), int32(2)},
	} {
		if !equalJSON(c.got, c.want) {
			t.Errorf("%s: got %s, want %s", c.field, jsonString(c.got), jsonString(c.want))
		}
	}
}

// TestRestate checks the single node and the cluster alike: the Services select the pods and
// reach their ports, and the injector's defaults name the headless Service of the nodes.
func TestRestate(t *testing.T) {
	cm := one[*corev1.ConfigMap](t, build(t, "injector"), "ConfigMap", "")
	conf, err := injector.ParseConfig([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("the injector's config.yaml: %v", err)
	}
	for _, tc := range []struct {
		dir      string
		replicas int32
	}{
		{"restate", 1},
		{"restate-cluster", 3},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			objs := build(t, tc.dir)
			sts := one[*appsv1.StatefulSet](t, objs, "StatefulSet", "restate")
			svc := one[*corev1.Service](t, objs, "Service", "restate")
			nodes := one[*corev1.Service](t, objs, "Service", "restate-nodes")
			headless := one[*corev1.Service](t, objs, "Service", sts.Spec.ServiceName)
			c := sts.Spec.Template.Spec.Containers[0]
			podLabels := labelsMatch(sts.Spec.Template.Labels)
			ports := func(s *corev1.Service) map[string]int32 {
				m := map[string]int32{}
				for _, p := range s.Spec.Ports {
					m[p.Name] = p.Port
					if containerPort(c, p.TargetPort.String()) != p.Port {
						t.Errorf("Service %s port %s: targets %s, which the container does not expose on %d", s.Name, p.Name, p.TargetPort.String(), p.Port)
					}
				}
				return m
			}
			nodePorts := ports(nodes)
			for _, ch := range []struct {
				field     string
				got, want any
			}{
				{"image", c.Image, "docker.io/restatedev/restate:1.7.12"},
				{"replicas", deref(sts.Spec.Replicas), tc.replicas},
				{"governing Service is headless", headless.Spec.ClusterIP, "None"},
				{"it publishes pods before they are ready (a node resolves its own name to start)", headless.Spec.PublishNotReadyAddresses, true},
				{"restate-nodes is headless", nodes.Spec.ClusterIP, "None"},
				// The sidecars get only the nodes that serve.
				{"restate-nodes publishes only ready pods", nodes.Spec.PublishNotReadyAddresses, false},
				{"restate Service ports", ports(svc), map[string]int32{"ingress": 8080, "admin": 9070}},
				{"restate-nodes ports", nodePorts, map[string]int32{"ingress": 8080, "admin": 9070}},
				{"Services select the pods", podLabels(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector}) &&
					podLabels(&metav1.LabelSelector{MatchLabels: nodes.Spec.Selector}) &&
					podLabels(&metav1.LabelSelector{MatchLabels: headless.Spec.Selector}), true},
				{"data volume", len(sts.Spec.VolumeClaimTemplates), 1},
				{"injector's ingressURL", conf.IngressURL, fmt.Sprintf("http://%s.%s.svc:%d", nodes.Name, nodes.Namespace, nodePorts["ingress"])},
				{"injector's adminURL", conf.AdminURL, fmt.Sprintf("http://%s.%s.svc:%d", nodes.Name, nodes.Namespace, nodePorts["admin"])},
			} {
				if !equalJSON(ch.got, ch.want) {
					t.Errorf("%s: got %s, want %s", ch.field, jsonString(ch.got), jsonString(ch.want))
				}
			}
		})
	}
}

// TestRestateCluster checks what makes the three pods one cluster: replication 2 with a
// disruption budget of one, every pod's stable name in the metadata addresses and as its
// advertised address, and, running the container's own start script with /bin/sh for each
// ordinal, a distinct stable node id per pod and provisioning on restate-0 alone.
func TestRestateCluster(t *testing.T) {
	objs := build(t, "restate-cluster")
	sts := one[*appsv1.StatefulSet](t, objs, "StatefulSet", "restate")
	pdb := one[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "restate")
	c := sts.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	// The pods' stable names: <pod>.<governing Service>.<namespace>.svc.cluster.local.
	var pods, addrs []string
	for i := range deref(sts.Spec.Replicas) {
		pod := fmt.Sprintf("%s-%d", sts.Name, i)
		pods = append(pods, pod)
		addrs = append(addrs, fmt.Sprintf("http://%s.%s.%s.svc.cluster.local:%d", pod, sts.Spec.ServiceName, sts.Namespace, containerPort(c, "node")))
	}
	var metadata []string
	if err := json.Unmarshal([]byte(env["RESTATE_METADATA_CLIENT__ADDRESSES"]), &metadata); err != nil {
		t.Errorf("RESTATE_METADATA_CLIENT__ADDRESSES %q: want a JSON list of URLs: %v", env["RESTATE_METADATA_CLIENT__ADDRESSES"], err)
	}
	for _, ch := range []struct {
		field     string
		got, want any
	}{
		{"RESTATE_DEFAULT_REPLICATION", env["RESTATE_DEFAULT_REPLICATION"], "2"},
		{"RESTATE_METADATA_CLIENT__ADDRESSES", metadata, addrs},
		{"RESTATE_ADVERTISED_ADDRESS", env["RESTATE_ADVERTISED_ADDRESS"],
			fmt.Sprintf("http://$(POD_NAME).%s.%s.svc.cluster.local:%d/", sts.Spec.ServiceName, sts.Namespace, containerPort(c, "node"))},
		{"RESTATE_NODE_NAME", env["RESTATE_NODE_NAME"], "$(POD_NAME)"},
		{"POD_NAME", envFieldRef(c, "POD_NAME"), "metadata.name"},
		{"RESTATE_CLUSTER_NAME", env["RESTATE_CLUSTER_NAME"] != "", true},
		{"podManagementPolicy", sts.Spec.PodManagementPolicy, appsv1.ParallelPodManagement},
		{"PodDisruptionBudget maxUnavailable", pdb.Spec.MaxUnavailable.String(), "1"},
		{"PodDisruptionBudget selects the pods", labelsMatch(sts.Spec.Template.Labels)(pdb.Spec.Selector), true},
	} {
		if !equalJSON(ch.got, ch.want) {
			t.Errorf("%s: got %s, want %s", ch.field, jsonString(ch.got), jsonString(ch.want))
		}
	}

	// The other pods' admin APIs, as host/port, which restate-0 asks before it provisions.
	var peers []string
	for _, pod := range pods[1:] {
		peers = append(peers, fmt.Sprintf("%s.%s.%s.svc.cluster.local/%d", pod, sts.Spec.ServiceName, sts.Namespace, containerPort(c, "admin")))
	}
	if got := strings.Fields(env["PEERS"]); !slices.Equal(got, peers) {
		t.Errorf("PEERS: got %q, want %q", got, peers)
	}

	if len(c.Command) != 3 || c.Command[0] != "/bin/bash" || c.Command[1] != "-c" {
		t.Fatalf("command: got %q, want /bin/bash -c SCRIPT", c.Command)
	}
	const server = "exec /usr/local/bin/restate-server"
	if !strings.HasSuffix(strings.TrimSpace(c.Command[2]), server) {
		t.Fatalf("the start script does not end in %q:\n%s", server, c.Command[2])
	}
	// The script with its last line printing the environment restate-server would get, run
	// for each pod, with the peers' admin APIs down (a new cluster) and with one of them up
	// (restate-0 restarted, perhaps on an empty volume, while the cluster runs).
	script := strings.TrimSuffix(strings.TrimSpace(c.Command[2]), server) + "exec env"
	bash := testenv.Tool(t, "bash")
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down.Close()
	asPeer := func(l net.Listener) string { return strings.Replace(l.Addr().String(), ":", "/", 1) }
	for _, peersUp := range []bool{false, true} {
		ids := map[string]string{}
		peerList := asPeer(down) + " " + asPeer(down)
		if peersUp {
			peerList = asPeer(down) + " " + asPeer(up)
		}
		for i, pod := range pods {
			cmd := exec.Command(bash, "-c", script)
			cmd.Env = []string{"POD_NAME=" + pod, "RESTATE_AUTO_PROVISION=" + env["RESTATE_AUTO_PROVISION"], "PEERS=" + peerList, "PATH=" + os.Getenv("PATH")}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("the start script as %s: %v", pod, err)
			}
			got := map[string]string{}
			for l := range strings.Lines(string(out)) {
				if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok {
					got[k] = v
				}
			}
			id := got["RESTATE_FORCE_NODE_ID"]
			if want := fmt.Sprint(i + 1); id != want {
				t.Errorf("%s: RESTATE_FORCE_NODE_ID %q, want %s (ordinal+1)", pod, id, want)
			}
			if other, dup := ids[id]; dup {
				t.Errorf("%s and %s both get node id %s", other, pod, id)
			}
			ids[id] = pod
			if got, want := got["RESTATE_AUTO_PROVISION"], fmt.Sprint(i == 0 && !peersUp); got != want {
				t.Errorf("%s, a peer's admin API up %v: RESTATE_AUTO_PROVISION %q, want %s (only restate-0 provisions, and only a cluster of none)", pod, peersUp, got, want)
			}
		}
	}
}

// TestExamples checks that the demo's apps ask for injection and that their annotations make a
// valid sidecar config, read as the sidecar reads them (config.ParseAnnotations).
func TestExamples(t *testing.T) {
	objs := build(t, "examples")
	orders := one[*corev1.Service](t, objs, "Service", "orders")
	// What the sidecar's environment gives its config ($(POD_IP) in the default register URI).
	env := config.Env{Getenv: func(name string) string { return map[string]string{"POD_IP": "10.1.0.7"}[name] }}
	for _, tc := range []struct {
		deployment        string
		outbound, inbound bool
	}{
		{"shop", true, false},
		{"orders", false, true},
	} {
		t.Run(tc.deployment, func(t *testing.T) {
			d := one[*appsv1.Deployment](t, objs, "Deployment", tc.deployment)
			p, err := config.ParseAnnotations(d.Spec.Template.Annotations, env)
			if err != nil {
				t.Fatalf("the pod's annotations: %v", err)
			}
			if !p.Inject {
				t.Errorf("restate-grpc.io/inject: got false, want true")
			}
			c := p.Config
			if got := c.Outbound != nil; got != tc.outbound {
				t.Errorf("has an outbound section: got %v, want %v", got, tc.outbound)
			}
			if got := c.Inbound != nil; got != tc.inbound {
				t.Errorf("has an inbound section: got %v, want %v", got, tc.inbound)
			}
			if in := c.Inbound; in != nil {
				// Restate calls the sidecar's inbound port (9080) through the orders Service.
				want := fmt.Sprintf("http://%s.%s.svc:%d", orders.Name, orders.Namespace, servicePort(orders, "restate"))
				if in.Register == nil || in.Register.URI != want || servicePort(orders, "restate") != 9080 {
					t.Errorf("inbound.register: got %s, want uri %s (the orders Service's port to 9080)", jsonString(in.Register), want)
				}
			}
			if selected := labelsMatch(d.Spec.Template.Labels)(&metav1.LabelSelector{MatchLabels: orders.Spec.Selector}); selected != tc.inbound {
				t.Errorf("the orders Service selects the %s pods: got %v, want %v", tc.deployment, selected, tc.inbound)
			}
		})
	}
}

// TestApply applies every object to the real API server: Namespaces for real (the others need
// them), everything else as a server-side apply with dry run, which runs the API server's own
// validation (strict field validation, defaulting, admission) without storing anything.
// cert-manager's Issuer and Certificate are the exception: the API server has no cert-manager
// CRDs, so it cannot take them; they are checked by decoding, in build and TestCertManagerVariant.
func TestApply(t *testing.T) {
	k := testenv.SharedKube(t)
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			if dir == "monitoring" {
				createNamespace(t, k, "monitoring") // Prometheus's, which the kustomization does not make
			}
			for _, o := range build(t, dir) {
				if o.GVK.Group == "cert-manager.io" {
					t.Logf("%s: not applied (no cert-manager CRDs in the test API server), only decoded", o)
					continue
				}
				if o.GVK.Kind == "Namespace" {
					createNamespace(t, k, o.Name)
					continue
				}
				if err := apply(t, k, o, true); err != nil {
					t.Errorf("server-side apply (dry run) of %s: %v", o, err)
				}
			}
		})
	}
}
