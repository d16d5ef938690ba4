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
	"syscall"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/sidecar"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

const usage = `usage: sidecar run -config FILE [-health ADDR] [-log-level LEVEL]
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
