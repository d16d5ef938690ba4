package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"

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

func runCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the sidecar: the outbound listener, the inbound endpoint, health",
		Args:  cobra.NoArgs,
	}
	cfgPath := configFlag(cmd)
	health := cmd.Flags().String("health", "127.0.0.1:15021", "address of /healthz and /readyz; empty disables")
	level := cmd.Flags().String("log-level", "info", "debug | info | warn | error")
	procs := cmd.Flags().Int("procs", 1, "cores the sidecar's Go code runs on at once (GOMAXPROCS), at most the CPU limit; 0: all Go sees; the GOMAXPROCS variable wins")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(*level)); err != nil {
			return usageError("--log-level: %v", err)
		}
		cfg, err := loadConfig(*cfgPath)
		if err != nil {
			return err
		}
		log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
		log.Info("starting", "procs", setProcs(*procs))
		s, err := sidecar.Start(cmd.Context(), sidecar.Options{Config: cfg, Health: *health, Logger: log})
		if err != nil {
			return failed(fmt.Errorf("start: %w", err))
		}
		<-s.Done()
		log.Info("shutting down", "grace", sidecar.ShutdownGrace)
		if err := s.Wait(); err != nil {
			return failed(fmt.Errorf("stopped with errors: %w", err))
		}
		return nil
	}
	return cmd
}

func checkCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Validate a config and print it with defaults",
		Args:  cobra.NoArgs,
	}
	cfgPath := configFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := loadConfig(*cfgPath)
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

// version is set at build time (-ldflags "-X main.version=v1.2.3"); without it the module
// version and VCS revision Go recorded are printed.
var version string

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the sidecar's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			v, rev := version, ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				if v == "" {
					v = bi.Main.Version
				}
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						rev = " " + s.Value
					}
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sidecar %s%s %s\n", v, rev, runtime.Version())
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
