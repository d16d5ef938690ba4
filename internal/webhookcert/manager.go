package webhookcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// Defaults of the Config fields of the same names.
const (
	DefaultCALifetime      = 10 * 365 * 24 * time.Hour
	DefaultCertLifetime    = 365 * 24 * time.Hour
	DefaultRefreshInterval = time.Minute
)

// Config configures a Manager. Zero durations take their defaults.
type Config struct {
	// Client reaches the API server; the Manager gets, creates and updates the Secret and gets
	// and updates the webhook configuration, nothing else.
	Client kubernetes.Interface
	// Namespace is the injector's (and its Secret's and Service's).
	Namespace string
	// SecretName is the Secret that holds the CA and the serving certificate, shared by the
	// replicas.
	SecretName string
	// Service is the name of the injector's Service: the serving certificate is for
	// svc, svc.ns, svc.ns.svc and svc.ns.svc.cluster.local.
	Service string
	// Hosts are more DNS names or IP addresses for the serving certificate, for webhooks
	// reached by URL (the API server checks the URL's host).
	Hosts []string
	// WebhookConfig is the MutatingWebhookConfiguration whose every webhook gets the CA bundle.
	WebhookConfig string
	// CALifetime and CertLifetime are how long a new CA and a new serving certificate are
	// valid; each is renewed when less than a third of it remains. Default 10 years and 1 year.
	CALifetime   time.Duration
	CertLifetime time.Duration
	// RefreshInterval is how often the Secret is read again: to renew, and to pick up what
	// another replica renewed. A new CA signs only after it has been in the webhook
	// configuration for this long. Default 1 minute.
	RefreshInterval time.Duration
	// Logger gets a line for every change to the Secret, the bundle and the served
	// certificate (Info) and every failed refresh (Warn). Default slog.Default().
	Logger *slog.Logger
}

// Manager is the self-signed way: it keeps a CA and a serving certificate in a Secret shared by
// the injector's replicas, keeps the CA bundle of the webhook configuration in step with it,
// and serves the certificate (see the package doc).
type Manager struct {
	cfg    Config
	policy policy
	log    *slog.Logger
	cert   atomic.Pointer[tls.Certificate]
	// seen is when each CA of the bundle was first known to be in the webhook configuration.
	// Only sync touches it, and sync runs from NewManager and then from Run alone.
	seen map[string]time.Time
}

// NewManager loads the CA and serving certificate from the Secret, or creates both if there is
// none (or it is unusable), writes the CA bundle into the webhook configuration, and returns a
// Manager that serves the certificate. Replicas may call it at once: one creates the Secret,
// the others load it.
func NewManager(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Client == nil || cfg.Namespace == "" || cfg.SecretName == "" || cfg.Service == "" || cfg.WebhookConfig == "" {
		return nil, errors.New("webhookcert: Client, Namespace, SecretName, Service and WebhookConfig are required")
	}
	if cfg.CALifetime < 0 || cfg.CertLifetime < 0 || cfg.RefreshInterval < 0 {
		return nil, errors.New("webhookcert: CALifetime, CertLifetime and RefreshInterval must not be negative")
	}
	if cfg.CALifetime == 0 {
		cfg.CALifetime = DefaultCALifetime
	}
	if cfg.CertLifetime == 0 {
		cfg.CertLifetime = DefaultCertLifetime
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	svc, ns := cfg.Service, cfg.Namespace
	m := &Manager{
		cfg: cfg,
		log: cfg.Logger.With("secret", ns+"/"+cfg.SecretName, "webhookConfig", cfg.WebhookConfig),
		policy: policy{
			hosts:        append([]string{svc + "." + ns + ".svc", svc, svc + "." + ns, svc + "." + ns + ".svc.cluster.local"}, cfg.Hosts...),
			caLifetime:   cfg.CALifetime,
			certLifetime: cfg.CertLifetime,
		},
		seen: map[string]time.Time{},
	}
	m.policy.settled = m.settled
	if err := m.sync(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// GetCertificate is for tls.Config: the serving certificate, the newest whose CA the webhook
// configuration trusts.
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.cert.Load(), nil
}

// Run renews the CA and the serving certificate before they expire and picks up what another
// replica renewed, every RefreshInterval, until ctx is done. A failed round is logged and
// tried again the next time; the certificate served meanwhile stays valid.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.sync(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("refreshing the webhook certificate failed; serving the current one", "error", err)
			}
		}
	}
}

// settled: the API server reads webhook configurations through an informer, so a bundle just
// written is used a moment later; a CA signs only after a refresh interval in the bundle.
func (m *Manager) settled(ca *x509.Certificate, now time.Time) bool {
	at, ok := m.seen[fingerprint(ca)]
	return ok && now.Sub(at) >= m.cfg.RefreshInterval
}

// sync brings the Secret up to date (from a fresh read, written with its resourceVersion, so
// that of replicas doing it at once one wins and the others start again from what it wrote),
// then the webhook configuration's bundle, and only then serves the Secret's certificate: a
// replica never serves a certificate whose CA the bundle lacks.
func (m *Manager) sync(ctx context.Context) error {
	mat, err := m.syncSecret(ctx)
	if err != nil {
		return fmt.Errorf("secret %s/%s: %w", m.cfg.Namespace, m.cfg.SecretName, err)
	}
	now := time.Now()
	switch err := m.syncBundle(ctx, mat.bundlePEM()); {
	case apierrors.IsNotFound(err):
		// No API server calls a webhook that is not configured: serving is harmless, and the
		// bundle is written once the configuration exists. Nothing is settled meanwhile.
		m.log.Warn("the webhook configuration does not exist (yet); its CA bundle is written once it does")
	case err != nil:
		return fmt.Errorf("mutatingwebhookconfiguration %s: %w", m.cfg.WebhookConfig, err)
	default:
		seen := make(map[string]time.Time, len(mat.bundle))
		for _, c := range mat.bundle {
			fp := fingerprint(c)
			if at, ok := m.seen[fp]; ok {
				seen[fp] = at
			} else {
				seen[fp] = now
			}
		}
		m.seen = seen
	}
	if old := m.cert.Load(); old == nil || !old.Leaf.Equal(mat.leaf.Leaf) {
		leaf := mat.leaf.Leaf
		m.log.Info("serving the webhook certificate", "serial", leaf.SerialNumber.Text(16),
			"issuer", leaf.Issuer.CommonName, "notAfter", leaf.NotAfter.Format(time.RFC3339))
		m.cert.Store(&mat.leaf)
	}
	return nil
}

// syncSecret reads the Secret, and creates or updates it as the policy says; it returns what
// the Secret holds afterwards.
func (m *Manager) syncSecret(ctx context.Context) (*material, error) {
	secrets := m.cfg.Client.CoreV1().Secrets(m.cfg.Namespace)
	var mat *material
	// Both a lost update (Conflict) and a lost create (AlreadyExists) mean another replica
	// wrote first: read again and decide again from what it wrote.
	lost := func(err error) bool {
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			m.log.Debug("another replica wrote the Secret first; deciding again from what it wrote", "error", err)
			return true
		}
		return false
	}
	err := retry.OnError(retry.DefaultRetry, lost, func() error {
		s, err := secrets.Get(ctx, m.cfg.SecretName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			s, err = nil, nil
		}
		if err != nil {
			return err
		}
		var cur *material
		if s != nil {
			if cur, err = parseMaterial(s.Data); err != nil {
				m.log.Warn("the Secret holds no usable certificates; replacing them", "error", err)
			}
		}
		next, why, err := m.policy.next(cur, time.Now())
		if err != nil {
			return err
		}
		if next == nil {
			mat = cur
			return nil
		}
		data, err := next.secretData()
		if err != nil {
			return err
		}
		if s == nil {
			s = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: m.cfg.SecretName, Namespace: m.cfg.Namespace},
				Type:       corev1.SecretTypeTLS,
				Data:       data,
			}
			_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
		} else {
			s = s.DeepCopy()
			s.Data = data
			_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
		}
		if err != nil {
			return err
		}
		m.log.Info("wrote the webhook certificates", "changes", strings.Join(why, "; "),
			"ca", next.ca().Subject.CommonName, "bundle", len(next.bundle))
		mat = next
		return nil
	})
	return mat, err
}

// syncBundle sets every webhook's caBundle to bundle, writing only when one differs.
func (m *Manager) syncBundle(ctx context.Context, bundle []byte) error {
	mwcs := m.cfg.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		mwc, err := mwcs.Get(ctx, m.cfg.WebhookConfig, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mwc = mwc.DeepCopy()
		changed := 0
		for i := range mwc.Webhooks {
			if cc := &mwc.Webhooks[i].ClientConfig; !bytes.Equal(cc.CABundle, bundle) {
				cc.CABundle = bundle
				changed++
			}
		}
		if changed == 0 {
			return nil
		}
		if _, err := mwcs.Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
			return err
		}
		m.log.Info("wrote the CA bundle into the webhook configuration", "webhooks", changed)
		return nil
	})
}
