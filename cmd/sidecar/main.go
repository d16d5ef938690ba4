// Command sidecar makes a legacy app's unary gRPC calls durable through Restate: it accepts the
// app's outbound calls and serves the app to Restate as a deployment. See the README.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/sidecar"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

const usage = `usage: sidecar run -config FILE [-health ADDR] [-log-level LEVEL] [-procs N]
       sidecar check -config FILE     validate a config and print it with defaults
       sidecar invocations attach|output|cancel|kill|lookup ...   manage invocations
`

func run(ctx context.Context, args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if args[0] == "invocations" {
		return invocationsCmd(ctx, args[1:], os.Stdout, stderr)
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", os.Getenv("RESTATE_GRPC_CONFIG"), "config file (YAML or JSON); env RESTATE_GRPC_CONFIG")
	health := fs.String("health", "127.0.0.1:15021", "address of /healthz and /readyz; empty disables")
	level := fs.String("log-level", "info", "debug | info | warn | error")
	procs := fs.Int("procs", 1, "cores the sidecar's Go code runs on at once (GOMAXPROCS), at most the CPU limit; 0: all Go sees; the GOMAXPROCS variable wins")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "sidecar: -log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	if *cfgPath == "" {
		fmt.Fprint(stderr, "sidecar: -config is required\n", usage)
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "sidecar: %v\n", err)
		return 1
	}
	switch args[0] {
	case "check":
		b, _ := config.Marshal(cfg)
		fmt.Fprintf(os.Stdout, "%s", b)
		return 0
	case "run":
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
	log.Info("starting", "procs", setProcs(*procs))
	s, err := sidecar.Start(ctx, sidecar.Options{Config: cfg, Health: *health, Logger: log})
	if err != nil {
		log.Error("start failed", "error", err)
		return 1
	}
	<-s.Done()
	log.Info("shutting down", "grace", sidecar.ShutdownGrace)
	if err := s.Wait(); err != nil {
		log.Error("stopped with errors", "error", err)
		return 1
	}
	return 0
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
