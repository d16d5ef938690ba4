package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Webhook is a MutatingWebhookConfiguration to register with a Kube, served by a handler of the
// test's own instead of the in-cluster Service the manifests name.
type Webhook struct {
	// Config is the configuration as decoded from the manifests; Register does not change it.
	Config *admissionregistrationv1.MutatingWebhookConfiguration
	// URL replaces every webhook's clientConfig.service, e.g. https://127.0.0.1:PORT/mutate.
	URL string
	// CABundle (PEM) is what the API server trusts for URL.
	CABundle []byte
	// Namespace is where the probe pods are created (with dry run: nothing is stored); created
	// when missing. The webhook's namespace selector must select it. Default restate-grpc-probe.
	Namespace string
	// Seen reports whether a probe pod, as the API server returned it, went through the
	// webhook. Default: it has the injector's marker annotation restate-grpc.io/status.
	Seen func(*corev1.Pod) bool
}

// InjectorWebhookConfig is the injector's MutatingWebhookConfiguration as manifests/injector
// declares it, decoded strictly (a field the API types lack fails the test).
func InjectorWebhookConfig(t testing.TB) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "manifests/injector/base/mutatingwebhookconfiguration.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(b, &mwc); err != nil {
		t.Fatalf("manifests/injector/base/mutatingwebhookconfiguration.yaml: %v", err)
	}
	if mwc.Kind != "MutatingWebhookConfiguration" || len(mwc.Webhooks) == 0 {
		t.Fatalf("manifests/injector/base/mutatingwebhookconfiguration.yaml: got kind %q with %d webhooks, want a MutatingWebhookConfiguration with webhooks", mwc.Kind, len(mwc.Webhooks))
	}
	return &mwc
}

// ProbeAnnotations are those of the probe pods RegisterWebhook creates: the injector's webhook
// selects them, and a test's handler can tell them from the pods it is testing.
var ProbeAnnotations = map[string]string{"restate-grpc.io/inject": "true", "restate-grpc.test/probe": "true"}

// RegisterWebhook creates w's configuration and returns once the API server calls the webhook,
// which it does some time after the create (it watches webhook configurations): until then
// pods are admitted without it. On cleanup it deletes the configuration and waits until pods
// are admitted without the webhook again, so that a later test on a shared API server does not
// meet a webhook whose handler is gone (failurePolicy Fail would refuse every pod). The
// handler must keep serving until then: start it before RegisterWebhook so that its own
// cleanup runs after this one.
func (k *Kube) RegisterWebhook(t testing.TB, w Webhook) {
	t.Helper()
	if w.Namespace == "" {
		w.Namespace = "restate-grpc-probe"
	}
	if w.Seen == nil {
		w.Seen = func(p *corev1.Pod) bool { return p.Annotations["restate-grpc.io/status"] != "" }
	}
	mwc := w.Config.DeepCopy()
	mwc.ResourceVersion = ""
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &w.URL, CABundle: w.CABundle}
	}
	ctx := t.Context()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.Namespace}}
	if _, err := k.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating the probe namespace: %v", err)
	}
	mwcs := k.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := mwcs.Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating MutatingWebhookConfiguration %s: %v", mwc.Name, err)
	}
	t.Cleanup(func() {
		// t.Context is done by now.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := mwcs.Delete(ctx, mwc.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting MutatingWebhookConfiguration %s: %v", mwc.Name, err)
			return
		}
		if err := k.waitProbe(w, false); err != nil {
			t.Errorf("after deleting MutatingWebhookConfiguration %s: %v", mwc.Name, err)
		}
	})
	if err := k.waitProbe(w, true); err != nil {
		t.Fatalf("after creating MutatingWebhookConfiguration %s: %v", mwc.Name, err)
	}
}

// waitProbe creates probe pods with dry run until one comes back through the webhook (seen) or
// is admitted without it (!seen).
func (k *Kube) waitProbe(w Webhook, seen bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "restate-grpc-probe", Namespace: w.Namespace, Annotations: ProbeAnnotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/probe"}}},
	}
	var last string
	for {
		got, err := k.Client.CoreV1().Pods(w.Namespace).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		switch {
		case err != nil:
			// The webhook refused the probe, or could not be reached: it is being called, but
			// the test's handler is not answering as Seen expects yet.
			last = err.Error()
		case w.Seen(got) == seen:
			return nil
		default:
			last = fmt.Sprintf("probe pod annotations %v", got.Annotations)
		}
		select {
		case <-ctx.Done():
			if seen {
				return fmt.Errorf("the API server did not call the webhook at %s within 30s (last: %s)", w.URL, last)
			}
			return fmt.Errorf("the API server still called the webhook at %s after 30s (last: %s)", w.URL, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
