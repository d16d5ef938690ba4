package webhookcert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

const testSvc = "inj"

var testNS atomic.Int64

// kubeFixture is a fresh namespace of the shared test API server, and the name of a webhook
// configuration for the pods of that namespace alone.
type kubeFixture struct {
	t      *testing.T
	client kubernetes.Interface
	ns     string
	mwc    string
}

// newKubeFixture makes a namespace of the shared API server; webhooks, when more than zero,
// is how many webhooks the configuration created for it has. Their URLs lead nowhere: no pod
// is created in that namespace, only the caBundle matters.
func newKubeFixture(t *testing.T, webhooks int) *kubeFixture {
	t.Helper()
	ctx := t.Context()
	client := testenv.SharedKube(t).Client
	f := &kubeFixture{t: t, client: client, ns: fmt.Sprintf("certs-%d-%d", time.Now().UnixNano()%1e6, testNS.Add(1))}
	f.mwc = f.ns + "-injector"
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.CoreV1().Namespaces().Delete(context.Background(), f.ns, metav1.DeleteOptions{}) })
	if webhooks == 0 {
		return f
	}
	mwc := f.webhookConfig(webhooks)
	for i := range mwc.Webhooks {
		u := fmt.Sprintf("https://127.0.0.1:1/w%d", i)
		mwc.Webhooks[i].ClientConfig.URL = &u
	}
	if _, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), f.mwc, metav1.DeleteOptions{})
	})
	return f
}

// webhookConfig is a configuration of n webhooks for the pods of the fixture's namespace, with
// failure policy Fail: a pod the API server cannot pass through a webhook is refused.
func (f *kubeFixture) webhookConfig(n int) *admregv1.MutatingWebhookConfiguration {
	none, fail, timeout := admregv1.SideEffectClassNone, admregv1.Fail, int32(5)
	mwc := &admregv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: f.mwc}}
	for i := range n {
		mwc.Webhooks = append(mwc.Webhooks, admregv1.MutatingWebhook{
			Name:                    fmt.Sprintf("w%d.webhookcert.test", i),
			Rules:                   []admregv1.RuleWithOperations{{Operations: []admregv1.OperationType{admregv1.Create}, Rule: admregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": f.ns}},
			SideEffects:             &none,
			FailurePolicy:           &fail,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
		})
	}
	return mwc
}

func (f *kubeFixture) config(secret string) Config {
	return Config{
		Client: f.client, Namespace: f.ns, SecretName: secret, Service: testSvc, WebhookConfig: f.mwc,
		Logger: slog.New(slog.NewTextHandler(testLog{f.t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// bundle is the webhook configuration's trust: each webhook's caBundle, which must all be one.
func (f *kubeFixture) bundle() *x509.CertPool {
	f.t.Helper()
	mwc, err := f.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), f.mwc, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, w := range mwc.Webhooks[1:] {
		if string(w.ClientConfig.CABundle) != string(mwc.Webhooks[0].ClientConfig.CABundle) {
			f.t.Fatalf("webhook %s has another caBundle than %s", w.Name, mwc.Webhooks[0].Name)
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(mwc.Webhooks[0].ClientConfig.CABundle) {
		f.t.Fatalf("the caBundle of %s holds no certificate", f.mwc)
	}
	return pool
}

// testLog sends a Manager's log to the test's.
type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// TestManagerBootstrap: the first Manager creates the Secret and writes its CA into every
// webhook; a client trusting only that bundle verifies the served certificate for each of the
// Service's names; a restarted Manager serves the same certificate and writes nothing.
func TestManagerBootstrap(t *testing.T) {
	f := newKubeFixture(t, 2)
	m, err := NewManager(t.Context(), f.config("tls"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.client.CoreV1().Secrets(f.ns).Get(t.Context(), "tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Type != corev1.SecretTypeTLS {
		t.Errorf("the Secret's type is %q, want %q", s.Type, corev1.SecretTypeTLS)
	}
	mat, err := parseMaterial(s.Data)
	if err != nil {
		t.Fatalf("the Secret: %v", err)
	}
	mwc, err := f.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(t.Context(), f.mwc, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range mwc.Webhooks {
		if got, want := string(w.ClientConfig.CABundle), string(s.Data[keyCA]); got != want {
			t.Errorf("webhook %s: caBundle\n%s\nwant the Secret's ca.crt\n%s", w.Name, got, want)
		}
	}
	roots := f.bundle()
	for _, name := range []string{"inj.NS.svc", "inj", "inj.NS", "inj.NS.svc.cluster.local"} {
		name = strings.ReplaceAll(name, "NS", f.ns)
		got, err := servedSerial(t, m.GetCertificate, roots, name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if want := mat.leaf.Leaf.SerialNumber; got.Cmp(want) != 0 {
			t.Errorf("%s: served serial %x, want the Secret's %x", name, got, want)
		}
	}
	if _, err := servedSerial(t, m.GetCertificate, roots, "other.svc"); err == nil {
		t.Error("the served certificate verifies for other.svc")
	}

	mwcVersion := f.webhookConfigVersion()
	again, err := NewManager(t.Context(), f.config("tls"))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := mustCert(t, m), mustCert(t, again); !a.Leaf.Equal(b.Leaf) {
		t.Errorf("a restarted Manager serves serial %x, want %x", b.Leaf.SerialNumber, a.Leaf.SerialNumber)
	}
	s2, err := f.client.CoreV1().Secrets(f.ns).Get(t.Context(), "tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.ResourceVersion != s.ResourceVersion {
		t.Errorf("a restarted Manager wrote the Secret (resourceVersion %s, was %s)", s2.ResourceVersion, s.ResourceVersion)
	}
	if v := f.webhookConfigVersion(); v != mwcVersion {
		t.Errorf("a restarted Manager wrote the webhook configuration (resourceVersion %s, was %s)", v, mwcVersion)
	}

	// Applying the manifest again (server-side, as kubectl apply --server-side does; the
	// manifest holds no caBundle) leaves the bundle the Manager wrote.
	manifest := f.webhookConfig(2)
	manifest.TypeMeta = metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"}
	for i := range manifest.Webhooks {
		u := fmt.Sprintf("https://127.0.0.1:1/w%d", i)
		manifest.Webhooks[i].ClientConfig.URL = &u
	}
	body, err := json.Marshal(manifest)
	if err != nil {
		t.Fatal(err)
	}
	force := true
	applied, err := f.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(t.Context(), f.mwc, types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "kubectl", Force: &force})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range applied.Webhooks {
		if got, want := string(w.ClientConfig.CABundle), string(s.Data[keyCA]); got != want {
			t.Errorf("after a server-side apply, webhook %s has caBundle\n%s\nwant\n%s", w.Name, got, want)
		}
	}
}

func (f *kubeFixture) webhookConfigVersion() string {
	f.t.Helper()
	mwc, err := f.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), f.mwc, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return mwc.ResourceVersion
}

// TestManagerReplacesUnusableSecret: a Secret that holds no usable certificates (left from
// elsewhere, or edited by hand) is replaced in place, and what replaces it is served.
func TestManagerReplacesUnusableSecret(t *testing.T) {
	f := newKubeFixture(t, 1)
	other := issue(t, time.Now(), time.Now(), testHosts)
	otherData, err := other.secretData()
	if err != nil {
		t.Fatal(err)
	}
	delete(otherData, keyCAKey)
	tests := []struct {
		name   string
		secret *corev1.Secret
	}{
		{"empty Opaque", &corev1.Secret{Type: corev1.SecretTypeOpaque}},
		{"garbage", &corev1.Secret{Type: corev1.SecretTypeTLS, Data: map[string][]byte{keyCert: []byte("x"), keyKey: []byte("y")}}},
		{"cert-manager's, without the CA key", &corev1.Secret{Type: corev1.SecretTypeTLS, Data: otherData}},
	}
	for i, tt := range tests {
		name := fmt.Sprintf("unusable-%d", i)
		tt.secret.Name = name
		if _, err := f.client.CoreV1().Secrets(f.ns).Create(t.Context(), tt.secret, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		m, err := NewManager(t.Context(), f.config(name))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		s, err := f.client.CoreV1().Secrets(f.ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mat, err := parseMaterial(s.Data)
		if err != nil {
			t.Errorf("%s: the Secret after NewManager: %v", tt.name, err)
			continue
		}
		got, err := servedSerial(t, m.GetCertificate, f.bundle(), testSvc+"."+f.ns+".svc")
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
		} else if want := mat.leaf.Leaf.SerialNumber; got.Cmp(want) != 0 {
			t.Errorf("%s: served serial %x, want the Secret's %x", tt.name, got, want)
		}
	}
}

func mustCert(t *testing.T, m *Manager) *tls.Certificate {
	t.Helper()
	c, err := m.GetCertificate(nil)
	if err != nil || c == nil {
		t.Fatalf("GetCertificate: %v, %v", c, err)
	}
	return c
}

// TestManagerReplicasRace: replicas started at once end with one Secret, one CA in the bundle,
// and all serve its certificate, which the bundle verifies. Several rounds, each on a Secret
// of its own, give the race its chances.
func TestManagerReplicasRace(t *testing.T) {
	f := newKubeFixture(t, 1)
	const replicas = 3
	for round := range 4 {
		secret := fmt.Sprintf("tls-%d", round)
		var wg sync.WaitGroup
		start := make(chan struct{})
		ms := make([]*Manager, replicas)
		errs := make([]error, replicas)
		for i := range replicas {
			wg.Go(func() {
				<-start
				ms[i], errs[i] = NewManager(t.Context(), f.config(secret))
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: replica %d: %v", round, i, err)
			}
		}
		s, err := f.client.CoreV1().Secrets(f.ns).Get(t.Context(), secret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mat, err := parseMaterial(s.Data)
		if err != nil {
			t.Fatal(err)
		}
		if len(mat.bundle) != 1 {
			t.Errorf("round %d: the Secret's bundle holds %d CAs, want 1", round, len(mat.bundle))
		}
		roots := f.bundle()
		for i, m := range ms {
			got, err := servedSerial(t, m.GetCertificate, roots, testSvc+"."+f.ns+".svc")
			if err != nil {
				t.Errorf("round %d: replica %d: %v", round, i, err)
				continue
			}
			if want := mat.leaf.Leaf.SerialNumber; got.Cmp(want) != 0 {
				t.Errorf("round %d: replica %d serves serial %x, want the Secret's %x", round, i, got, want)
			}
		}
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopSharedKube()
	os.Exit(code)
}

// servedKey is where the test webhook's server notes, per connection, which replica's
// certificate it presented.
type servedKey struct{}

// webhook serves a tiny admission handler that annotates every pod with the replica and the
// serial of the certificate its connection presented. Each connection takes the certificate of
// the next replica in turn, and each answer closes its connection, so that every call of the
// API server makes a new handshake and checks the certificate afresh.
func webhook(t *testing.T, replicas []*Manager) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var next atomic.Int64
	srv := &http.Server{
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, servedKey{}, new(string))
		},
		TLSConfig: &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			i := int(next.Add(1)) % len(replicas)
			c, err := replicas[i].GetCertificate(h)
			if err == nil {
				*h.Context().Value(servedKey{}).(*string) = fmt.Sprintf("r%d-%s", i, c.Leaf.SerialNumber.Text(16))
			}
			return c, err
		}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var review admissionv1.AdmissionReview
			if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
				http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
				return
			}
			var pod corev1.Pod
			if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			served := *r.Context().Value(servedKey{}).(*string)
			patch := []map[string]any{{"op": "add", "path": "/metadata/annotations/" + strings.ReplaceAll(servedAnnotation, "/", "~1"), "value": served}}
			if pod.Annotations == nil {
				patch = []map[string]any{{"op": "add", "path": "/metadata/annotations", "value": map[string]string{servedAnnotation: served}}}
			}
			b, err := json.Marshal(patch)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			pt := admissionv1.PatchTypeJSONPatch
			review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true, Patch: b, PatchType: &pt}
			review.Request = nil
			w.Header().Set("Connection", "close")
			json.NewEncoder(w).Encode(&review)
		}),
		// The API server's handshakes fail until a replica has written the bundle; a failure
		// after that fails a pod's create, which the test reports.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return "https://" + ln.Addr().String() + "/mutate"
}

const servedAnnotation = "webhookcert.test/served"

// TestManagerRotation: with lifetimes of seconds, two replicas renew the serving certificate,
// then the CA, then drop the old CA, while the API server calls the webhook (served with their
// certificates in turn, failure policy Fail) for a pod created every moment: every pod is
// admitted and stored with the webhook's annotation, before and after each rotation; each
// replica serves, at every moment, a certificate that the bundle verifies; when a replica
// moves to the new CA's certificate, the bundle verifies both its old and its new one.
func TestManagerRotation(t *testing.T) {
	f := newKubeFixture(t, 0)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	// The replicas log to t: they end before it does.
	t.Cleanup(func() { cancel(); wg.Wait() })
	ms := make([]*Manager, 2)
	errs := make([]error, len(ms))
	for i := range ms {
		cfg := f.config("tls")
		cfg.Hosts = []string{"127.0.0.1"} // the API server calls https://127.0.0.1:PORT
		cfg.CALifetime, cfg.CertLifetime, cfg.RefreshInterval = 12*time.Second, 6*time.Second, 500*time.Millisecond
		cfg.Logger = cfg.Logger.With("replica", i)
		wg.Go(func() { ms[i], errs[i] = NewManager(ctx, cfg) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		wg.Go(func() { ms[i].Run(ctx) })
	}
	// The configuration is created after the replicas started (as kubectl applies it after the
	// Deployment), without a caBundle: the replicas write it, else the API server never
	// gets through to the webhook.
	testenv.SharedKube(t).RegisterWebhook(t, testenv.Webhook{
		Config:    f.webhookConfig(1),
		URL:       webhook(t, ms),
		Namespace: f.ns,
		Seen:      func(p *corev1.Pod) bool { return p.Annotations[servedAnnotation] != "" },
	})

	pods := f.client.CoreV1().Pods(f.ns)
	last := make([]*x509.Certificate, len(ms)) // what each replica served last
	admitted := map[string]bool{}              // the annotations of the stored pods
	var cas []string                           // the signing CAs of the Secret, in turn
	maxBundle := 0
	issuerOf := map[string]string{} // serial (hex) of each certificate served, to its CA
	deadline := time.Now().Add(60 * time.Second)
	for n := 0; ; n++ {
		for i, m := range ms {
			c := mustCert(t, m).Leaf
			if err := verifyAgainst(c, f.bundle(), testSvc+"."+f.ns+".svc"); err != nil {
				t.Errorf("replica %d serves serial %x, which the bundle does not verify: %v", i, c.SerialNumber, err)
			}
			if p := last[i]; p != nil && !p.Equal(c) && p.Issuer.CommonName != c.Issuer.CommonName {
				for _, cert := range []*x509.Certificate{p, c} {
					if err := verifyAgainst(cert, f.bundle(), testSvc+"."+f.ns+".svc"); err != nil {
						t.Errorf("replica %d moved to CA %s: the bundle does not verify serial %x of %s: %v",
							i, c.Issuer.CommonName, cert.SerialNumber, cert.Issuer.CommonName, err)
					}
				}
			}
			last[i] = c
			issuerOf[c.SerialNumber.Text(16)] = c.Issuer.CommonName
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", n)},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app"}}},
		}
		if _, err := pods.Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
			t.Errorf("creating pod %s: %v", pod.Name, err)
		} else if stored, err := pods.Get(t.Context(), pod.Name, metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		} else if a := stored.Annotations[servedAnnotation]; a == "" {
			t.Errorf("stored pod %s has no annotation %s: %v", pod.Name, servedAnnotation, stored.Annotations)
		} else {
			admitted[a] = true
		}
		s, err := f.client.CoreV1().Secrets(f.ns).Get(t.Context(), "tls", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mat, err := parseMaterial(s.Data)
		if err != nil {
			t.Fatal(err)
		}
		if ca := mat.ca().Subject.CommonName; len(cas) == 0 || cas[len(cas)-1] != ca {
			cas = append(cas, ca)
		}
		maxBundle = max(maxBundle, len(mat.bundle))
		// Done once the CA was renewed, both replicas serve the new CA's certificate, and the
		// old CA left the bundle.
		done := len(cas) >= 2 && maxBundle == 2 && len(mat.bundle) == 1
		for _, c := range last {
			done = done && c.Issuer.CommonName == cas[len(cas)-1]
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s: CAs %v, bundle %d (at most %d), replicas serve %v", cas, len(mat.bundle), maxBundle, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Pods were admitted through certificates of the first CA and of the second.
	throughCA := map[string]int{}
	for a := range admitted {
		_, serial, _ := strings.Cut(a, "-")
		throughCA[issuerOf[serial]]++
	}
	for _, ca := range cas[:2] {
		if throughCA[ca] == 0 {
			t.Errorf("no pod was admitted through a certificate of CA %s (admitted through %v)", ca, throughCA)
		}
	}
	t.Logf("CAs %v; pods admitted through certificates of each CA: %v", cas, throughCA)
}

// verifyAgainst checks c as the API server does, against roots for name.
func verifyAgainst(c *x509.Certificate, roots *x509.CertPool, name string) error {
	_, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// TestManagerRBAC: the Manager needs no more than the injector's RBAC grants (ISSUE11.md):
// get and update of its webhook configuration and of its Secret, and create of Secrets in its
// namespace. It runs as a user with exactly that.
func TestManagerRBAC(t *testing.T) {
	f := newKubeFixture(t, 1)
	const user = "webhookcert-test-injector"
	ctx := t.Context()
	rbac := f.client.RbacV1()
	subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
	cr := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: f.ns + "-injector"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
			ResourceNames: []string{f.mwc}, Verbs: []string{"get", "update"}}},
	}
	if _, err := rbac.ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: cr.ObjectMeta, Subjects: subject, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name}}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rbac.ClusterRoleBindings().Delete(context.Background(), crb.Name, metav1.DeleteOptions{})
		rbac.ClusterRoles().Delete(context.Background(), cr.Name, metav1.DeleteOptions{})
	})
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "injector", Namespace: f.ns},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"tls"}, Verbs: []string{"get", "update"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
		},
	}
	if _, err := rbac.Roles(f.ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: role.ObjectMeta, Subjects: subject, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}}
	if _, err := rbac.RoleBindings(f.ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rc := rest.CopyConfig(testenv.SharedKube(t).Config)
	rc.Impersonate = rest.ImpersonationConfig{UserName: user}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Secrets(f.ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("listing Secrets as %s: %v, want Forbidden (the test's RBAC is not in force)", user, err)
	}
	cfg := f.config("tls")
	cfg.Client = client
	// The role binding may take a moment to apply: the first NewManager that gets through
	// does all the work (creates the Secret, writes the bundle), the second loads.
	var m *Manager
	deadline := time.Now().Add(10 * time.Second)
	for m == nil {
		if m, err = NewManager(ctx, cfg); err != nil {
			if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
				t.Fatalf("NewManager as %s: %v", user, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if _, err := NewManager(ctx, cfg); err != nil {
		t.Fatalf("a second NewManager as %s: %v", user, err)
	}
	if _, err := servedSerial(t, m.GetCertificate, f.bundle(), testSvc+"."+f.ns+".svc"); err != nil {
		t.Error(err)
	}
}

// TestManagerRestoresBundle: a caBundle that something else rewrote (a replace of the
// configuration without it) is written back at the next refresh.
func TestManagerRestoresBundle(t *testing.T) {
	f := newKubeFixture(t, 2)
	cfg := f.config("tls")
	cfg.RefreshInterval = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	m, err := NewManager(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done }) // its log goes to t
	mwcs := f.client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	mwc, err := mwcs.Get(t.Context(), f.mwc, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := string(mwc.Webhooks[0].ClientConfig.CABundle)
	mwc.Webhooks[1].ClientConfig.CABundle = nil
	if _, err := mwcs.Update(t.Context(), mwc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mwc, err := mwcs.Get(t.Context(), f.mwc, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(mwc.Webhooks[1].ClientConfig.CABundle); got == want {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("5s after webhook %s's caBundle was emptied it holds %q, want the Secret's ca.crt", mwc.Webhooks[1].Name, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
