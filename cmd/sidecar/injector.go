package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/restate-grpc/restate-grpc/internal/injector"
	"github.com/restate-grpc/restate-grpc/internal/webhookcert"
)

// injectorShutdown bounds how long the webhook finishes the reviews in flight after a signal.
const injectorShutdown = 10 * time.Second

func injectorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "injector (--tls-cert-dir DIR | --self-signed)",
		Short: "Serve the mutating admission webhook that injects the sidecar into pods",
		Long: `injector serves the mutating admission webhook (admission.k8s.io/v1, POST /mutate) that adds the
sidecar to pods annotated restate-grpc.io/inject: "true" as the API server creates them, and
/healthz and /readyz, all on one TLS port. Its certificate comes from a directory that
cert-manager fills (--tls-cert-dir, read again when it changes), or it makes its own
(--self-signed): a CA and a serving certificate kept in a Secret that the replicas share, the
CA written into the MutatingWebhookConfiguration, both renewed before they expire.`,
		Example: `  sidecar injector --config /etc/restate-grpc/injector.yaml --self-signed
  sidecar injector --config /etc/restate-grpc/injector.yaml --tls-cert-dir /etc/restate-grpc/tls`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	cfgPath := f.String("config", "", "the injector's config file (image, defaults, policies); default: built-in defaults")
	listen := f.String("listen", ":8443", "the webhook's TLS address")
	certDir := f.String("tls-cert-dir", "", "directory with tls.crt and tls.key (a cert-manager Secret), read again when they change")
	selfSigned := f.Bool("self-signed", false, "make and renew a self-signed CA and certificate, kept in --secret-name, the CA written into --webhook-config")
	secret := f.String("secret-name", "restate-grpc-injector-tls", "--self-signed: the Secret shared by the replicas")
	webhookConfig := f.String("webhook-config", "restate-grpc-injector", "--self-signed: the MutatingWebhookConfiguration that gets the CA")
	service := f.String("service", "restate-grpc-injector", "--self-signed: the injector's Service, whose names the certificate is for")
	hosts := f.StringSlice("host", nil, "--self-signed: more names or addresses for the certificate (a webhook reached by URL)")
	caLifetime := f.Duration("ca-lifetime", webhookcert.DefaultCALifetime, "--self-signed: how long a new CA is valid; renewed with a third left")
	certLifetime := f.Duration("cert-lifetime", webhookcert.DefaultCertLifetime, "--self-signed: how long a new certificate is valid; renewed with a third left")
	refresh := f.Duration("refresh-interval", webhookcert.DefaultRefreshInterval, "--self-signed: how often the Secret is read again")
	namespace := f.String("namespace", os.Getenv("POD_NAMESPACE"), "the injector's namespace, whose pods it never injects; env POD_NAMESPACE")
	kubeconfig := f.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the API server; empty: the pod's service account; env KUBECONFIG")
	level := f.String("log-level", "info", "debug | info | warn | error")
	cmd.MarkFlagsMutuallyExclusive("tls-cert-dir", "self-signed")
	cmd.MarkFlagsOneRequired("tls-cert-dir", "self-signed")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(*level)); err != nil {
			return usageError("--log-level: %v", err)
		}
		if *namespace == "" {
			return usageError("--namespace (or POD_NAMESPACE) is required: the injector's own namespace")
		}
		log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
		cfg, err := injector.LoadConfig(*cfgPath)
		if err != nil {
			return failed(err)
		}
		rc, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
		if err != nil {
			return failed(fmt.Errorf("the API server: %w", err))
		}
		rc.Timeout = 10 * time.Second
		client, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return failed(err)
		}
		native, err := cfg.Native(client.Discovery().ServerVersion)
		if err != nil {
			return failed(err)
		}
		ctx := cmd.Context()
		var getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)
		if *selfSigned {
			m, err := webhookcert.NewManager(ctx, webhookcert.Config{
				Client: client, Namespace: *namespace, SecretName: *secret, Service: *service, Hosts: *hosts,
				WebhookConfig: *webhookConfig, CALifetime: *caLifetime, CertLifetime: *certLifetime,
				RefreshInterval: *refresh, Logger: log,
			})
			if err != nil {
				return failed(fmt.Errorf("self-signed certificate: %w", err))
			}
			// Renewals run until the command returns, however it returns.
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); m.Run(runCtx) }()
			defer func() { stop(); <-done }()
			getCert = m.GetCertificate
		} else {
			r, err := webhookcert.NewReloader(*certDir, log)
			if err != nil {
				return failed(err)
			}
			getCert = r.GetCertificate
		}
		wh := &injector.Webhook{
			Injector: injector.New(cfg, *namespace),
			Native:   native,
			Log:      log,
			NamespaceDisabled: func(ctx context.Context, name string) (bool, error) {
				ns, err := client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				return ns.Labels[injector.DisableLabel] == "disabled", nil
			},
		}
		mux := http.NewServeMux()
		mux.Handle("/mutate", wh)
		ok := func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }
		mux.HandleFunc("GET /healthz", ok)
		mux.HandleFunc("GET /readyz", ok) // serving means a certificate is loaded: both constructors fail without one
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return failed(err)
		}
		srv := &http.Server{
			Handler:           mux,
			TLSConfig:         &tls.Config{GetCertificate: getCert, MinVersion: tls.VersionTLS12},
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       15 * time.Second,
			WriteTimeout:      15 * time.Second,
			IdleTimeout:       90 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		log.Info("injector serving", "addr", ln.Addr().String(), "native_sidecars", native, "namespace", *namespace, "version", buildVersion())
		errc := make(chan error, 1)
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
		select {
		case err := <-errc:
			return failed(err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), injectorShutdown)
		defer cancel()
		log.Info("shutting down", "grace", injectorShutdown)
		if err := srv.Shutdown(sctx); err != nil {
			return failed(err)
		}
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			return failed(err)
		}
		return nil
	}
	return cmd
}
