// Command sidecar makes a legacy app's unary gRPC calls durable through Restate: it accepts the
// app's outbound calls and serves the app to Restate as a deployment. See the README.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(execute(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
