package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/sidecar"
)

// configFlag adds --config, whose default is the RESTATE_GRPC_CONFIG variable.
func configFlag(cmd *cobra.Command) *string {
	return cmd.Flags().String("config", os.Getenv("RESTATE_GRPC_CONFIG"), "config file (YAML or JSON); env RESTATE_GRPC_CONFIG")
}

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, usageError("--config is required")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, failed(err)
	}
	return cfg, nil
}

// sourceFlags adds --config and --annotations: the config comes from a file or from the
// pod's annotations, as the injector sets the sidecar up.
func sourceFlags(cmd *cobra.Command) func() (*config.Config, error) {
	cfgPath := configFlag(cmd)
	ann := cmd.Flags().String("annotations", os.Getenv("RESTATE_GRPC_ANNOTATIONS"),
		"the pod's annotations as a downward-API file, instead of --config; env RESTATE_GRPC_ANNOTATIONS")
	cmd.MarkFlagsMutuallyExclusive("config", "annotations")
	return func() (*config.Config, error) {
		if *ann == "" {
			if *cfgPath == "" {
				return nil, usageError("--config or --annotations is required")
			}
			return loadConfig(*cfgPath)
		}
		cfg, err := config.LoadAnnotations(*ann)
		if err != nil {
			return nil, failed(err)
		}
		return cfg, nil
	}
}

// healthFlag adds --health, whose default is the RESTATE_GRPC_HEALTH variable, which the
// injector sets to the pod's address.
func healthFlag(cmd *cobra.Command) *string {
	def := os.Getenv("RESTATE_GRPC_HEALTH")
	if def == "" {
		def = "127.0.0.1:15021"
	}
	return cmd.Flags().String("health", def, "address of /healthz and /readyz; env RESTATE_GRPC_HEALTH")
}

func runCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run (--config FILE | --annotations FILE)",
		Short: "Run the sidecar: the outbound listener, the inbound endpoint, health",
		Args:  cobra.NoArgs,
	}
	load := sourceFlags(cmd)
	health := healthFlag(cmd)
	level := cmd.Flags().String("log-level", "", "debug | info | warn | error; default the config's logLevel, else info")
	format := cmd.Flags().String("log-format", "", "text | json; default the config's logFormat, else text")
	procs := cmd.Flags().Int("procs", 1, "cores the sidecar's Go code runs on at once (GOMAXPROCS), at most the CPU limit; 0: all Go sees; the GOMAXPROCS variable wins")
	gcPercent := cmd.Flags().Int("gc-percent", defaultGCPercent, "the collector's heap growth target, GOGC (0: Go's default, 100); the GOGC variable wins. A soft memory limit of 90% of the container's (GOMEMLIMIT, which wins) bounds the heap")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(*level)); *level != "" && err != nil {
			return usageError("--log-level: %v", err)
		}
		if *format != "" && *format != config.LogFormatText && *format != config.LogFormatJSON {
			return usageError("--log-format: %q is not one of text, json", *format)
		}
		cfg, err := load()
		if err != nil {
			return err
		}
		if *level == "" && cfg.LogLevel != "" {
			lvl.UnmarshalText([]byte(cfg.LogLevel)) // validated with the config
		}
		opts := &slog.HandlerOptions{Level: lvl}
		var h slog.Handler = slog.NewTextHandler(cmd.ErrOrStderr(), opts)
		if *format == config.LogFormatJSON || (*format == "" && cfg.LogFormat == config.LogFormatJSON) {
			h = slog.NewJSONHandler(cmd.ErrOrStderr(), opts)
		}
		log := slog.New(h)
		gogc, memLimit := setGC(*gcPercent)
		log.Info("starting", "procs", setProcs(*procs), "gogc", gogc, "memoryLimit", memLimit, "version", buildVersion())
		// The first SIGTERM or SIGINT drains (main's context ends with it too); a second one
		// means whoever sent it will not wait for the drain, as Envoy and Linkerd take it.
		sigs := make(chan os.Signal, 2)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sigs)
		ctx, cancel := context.WithCancel(cmd.Context())
		defer cancel()
		s, err := sidecar.Start(ctx, sidecar.Options{Config: cfg, Health: *health, Logger: log, Version: buildVersion()})
		if err != nil {
			return failed(fmt.Errorf("start: %w", err))
		}
		stopped := make(chan error, 1)
		go func() { <-s.Done(); stopped <- s.Wait() }()
		select {
		case err := <-stopped: // a part failed for good, or the command's context ended
			if err != nil {
				return failed(fmt.Errorf("stopped with errors: %w", err))
			}
			return nil
		case sig := <-sigs:
			log.Info("draining: no new connections, calls in flight may finish", "signal", sig.String(), "grace", cfg.Shutdown.Grace.Std())
			cancel()
		}
		select {
		case err := <-stopped:
			if err != nil {
				return failed(fmt.Errorf("stopped with errors: %w", err))
			}
			log.Info("drained")
			return nil
		case sig := <-sigs:
			return failed(fmt.Errorf("second %s while draining: calls in flight cut", sig))
		}
	}
	return cmd
}

func checkCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check (--config FILE | --annotations FILE)",
		Short: "Validate a config and print it with defaults",
		Args:  cobra.NoArgs,
	}
	load := sourceFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := load()
		if err != nil {
			return err
		}
		b, err := config.Marshal(cfg)
		if err != nil {
			return failed(err)
		}
		if _, err := cmd.OutOrStdout().Write(b); err != nil {
			return failed(err)
		}
		return nil
	}
	return cmd
}

// version and commit are set at build time (make build: -ldflags "-X main.version=v1.2.3
// -X main.commit=..."); without them, what Go recorded of the module and its VCS is used.
var version, commit string

// buildVersion is "VERSION (commit COMMIT)".
func buildVersion() string {
	v, rev := version, commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && rev == "" {
				rev = s.Value
			}
		}
	}
	if rev == "" {
		rev = "unknown: built without VCS information or -X main.commit"
	}
	return fmt.Sprintf("%s (commit %s)", v, rev)
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the sidecar's version and commit",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "sidecar %s %s\n", buildVersion(), runtime.Version())
		},
	}
}

// setProcs caps the cores the sidecar runs Go code on at n (0: no cap) and returns the
// result. Like Linkerd's proxy (one core) and Istio's Envoy (two workers), a sidecar keeps
// to few cores whatever the node has: more Go scheduler threads than that only wake up and
// compete with the app on every call. An explicit GOMAXPROCS wins; Go already keeps to a
// pod's CPU limit.
func setProcs(n int) int {
	if n > 0 && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(min(n, runtime.GOMAXPROCS(0)))
	}
	return runtime.GOMAXPROCS(0)
}
