package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	kversion "k8s.io/apimachinery/pkg/version"

	"github.com/restate-grpc/restate-grpc/internal/injector"
)

func injectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inject [-f FILE]",
		Short: "Add the sidecar to the pods of Kubernetes YAML, as the injector does",
		Long: `inject reads Kubernetes YAML (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs,
CronJobs, and Lists of them) and writes it with the sidecar added to every pod annotated
restate-grpc.io/inject: "true", exactly as the injector's webhook would add it: for manual
injection and GitOps. Other objects, and pods not annotated, are written as they came.
Injecting twice changes nothing. A pod with wrong restate-grpc.io/ annotations fails the
command, naming each annotation and what is wrong, unless the config's onInvalid is skip.`,
		Example: `  sidecar inject -f deploy.yaml | kubectl apply -f -
  kubectl get deploy checkout -o yaml | sidecar inject --config injector.yaml | kubectl apply -f -
  sidecar inject -f deploy.yaml --kube-version 1.28   # a plain sidecar container, for clusters without native sidecars`,
		Args: cobra.NoArgs,
	}
	file := cmd.Flags().StringP("filename", "f", "-", "the YAML to inject; - reads standard input")
	cfgPath := cmd.Flags().String("config", "", "the injector's config file (image, defaults, policies); default: built-in defaults")
	namespace := cmd.Flags().String("namespace", "default", "the namespace of objects that name none")
	kubeVersion := cmd.Flags().String("kube-version", "", "the cluster's Kubernetes version (1.28): before 1.29 the sidecar is a plain container; default: a cluster with native sidecars")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := injector.LoadConfig(*cfgPath)
		if err != nil {
			return failed(err)
		}
		native, err := cfg.Native(func() (*kversion.Info, error) {
			if *kubeVersion == "" {
				return &kversion.Info{Major: "1", Minor: "29"}, nil
			}
			major, minor, _ := strings.Cut(strings.TrimPrefix(*kubeVersion, "v"), ".")
			minor, _, _ = strings.Cut(minor, ".")
			return &kversion.Info{Major: major, Minor: minor}, nil
		})
		if err != nil {
			return usageError("--kube-version: want MAJOR.MINOR such as 1.28: %v", err)
		}
		in := cmd.InOrStdin()
		if *file != "-" {
			f, err := os.Open(*file)
			if err != nil {
				return failed(err)
			}
			defer f.Close()
			in = f
		}
		if err := injector.New(cfg, "").InjectYAML(in, cmd.OutOrStdout(), *namespace, native); err != nil {
			return failed(err)
		}
		return nil
	}
	return cmd
}

func waitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wait",
		Short: "Wait until the sidecar is ready (its /readyz answers 200)",
		Long: `wait returns once the sidecar's /readyz answers 200 (with --outbound, /readyz/outbound: the
outbound listener serves, which the app needs to start), or fails after --timeout. The
injector runs wait --outbound as the postStart hook of the sidecar container on clusters
without native sidecars, so the kubelet starts the app's containers only once the sidecar
takes their calls.`,
		Args: cobra.NoArgs,
	}
	health := healthFlag(cmd)
	timeout := cmd.Flags().Duration("timeout", 2*time.Minute, "how long to wait")
	outbound := cmd.Flags().Bool("outbound", false, "wait for the outbound listener only, not for the inbound side's registration")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, cancel := context.WithTimeout(cmd.Context(), *timeout)
		defer cancel()
		path := "/readyz"
		if *outbound {
			path += "/outbound"
		}
		if err := waitReady(ctx, "http://"+*health+path); err != nil {
			return failed(err)
		}
		fmt.Fprintln(cmd.OutOrStdout(), "sidecar ready")
		return nil
	}
	return cmd
}

func waitReady(ctx context.Context, url string) error {
	c := &http.Client{Timeout: time.Second}
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s %s", url, resp.Status, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the sidecar is not ready: %s", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
