package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

var startups = flag.Int("startups", 5, "times each sidecar (outbound, inbound) is started as a process to measure its start to /readyz 200; 0: none")

// startupPoll is how often /readyz is asked while a sidecar starts: the measurement's grain.
const startupPoll = 2 * time.Millisecond

// printStartup starts an outbound and an inbound sidecar process n times each and prints how
// long each took from its exec to its first /readyz 200: for the inbound one that includes
// registering with Restate and finding the app answering, as readiness does. The binary is
// dir's sidecar, built unless -processes built it.
func printStartup(n int, dir, appAddr string, rs *testenv.Restate) error {
	bin := filepath.Join(dir, "sidecar")
	if _, err := os.Stat(bin); err != nil {
		root, err := testenv.RepoRoot()
		if err != nil {
			return err
		}
		if err := command(root, "go", "build", "-o", dir+"/", "./cmd/sidecar"); err != nil {
			return err
		}
	}
	configs := []struct {
		name string
		yaml func(listen string) string
	}{
		{"outbound", func(listen string) string {
			return fmt.Sprintf("outbound: {listen: %s, ingress: %s, routes: [{match: rgtest.v1.Echo/Call}]}\n", listen, rs.Ingress)
		}},
		{"inbound", func(listen string) string {
			return fmt.Sprintf("inbound: {app: %s, listen: %s, register: {admin: %s, uri: \"http://%[2]s\"}, services: [{name: rgtest.v1.Echo, handlers: {Call: \"\"}}]}\n",
				appAddr, listen, rs.Admin)
		}},
	}
	p := &processes{dir: dir}
	fmt.Printf("\n%-24s %5s %10s %10s %10s\n", "start to /readyz 200", "runs", "min", "median", "max")
	for _, c := range configs {
		var took []time.Duration
		for i := range n {
			d, err := startOnce(p, filepath.Join(dir, fmt.Sprintf("startup-%s-%d.yaml", c.name, i)), c.yaml)
			if err != nil {
				return fmt.Errorf("%s sidecar start %d: %w", c.name, i+1, err)
			}
			took = append(took, d)
		}
		if len(took) == 0 {
			continue
		}
		slices.Sort(took)
		fmt.Printf("%-24s %5d %10s %10s %10s\n", c.name, n, ms(took[0]), ms(took[len(took)/2]), ms(took[len(took)-1]))
	}
	return nil
}

// startOnce runs the sidecar on the config yaml makes, on free ports, and returns how long it
// took from the exec to /readyz 200; then it stops the sidecar and waits for it to exit.
func startOnce(p *processes, cfgPath string, yaml func(listen string) string) (time.Duration, error) {
	listen, err := freeAddr()
	if err != nil {
		return 0, err
	}
	health, err := freeAddr()
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(cfgPath, []byte(yaml(listen)), 0o600); err != nil {
		return 0, err
	}
	cmd := p.command("sidecar", "run", "-config", cfgPath, "-health", health, "-log-level", "warn")
	hc := &http.Client{Timeout: time.Second}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	deadline := start.Add(30 * time.Second)
	for {
		resp, err := hc.Get("http://" + health + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not ready after 30s (last: %v)", err)
		}
		time.Sleep(startupPoll)
	}
}
