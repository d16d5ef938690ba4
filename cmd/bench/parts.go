package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/sidecar"
	"github.com/restate-grpc/restate-grpc/internal/testenv"
	"github.com/restate-grpc/restate-grpc/internal/testservice"
)

// runner starts the app and sidecars of the measured paths, and returns once they serve. The
// app, the relays and the outbound sidecars listen on ports of their own choosing, and say which.
type runner interface {
	// app returns the address the app serves on.
	app() (string, error)
	// relay starts a plain TCP relay to the address to, and returns the address it takes.
	relay(to string) (string, error)
	// outbound starts an outbound sidecar configured by cfg(listen address), and returns the
	// address it listens on.
	outbound(cfg func(listen string) string) (string, error)
	// pidOf is the pid of the outbound sidecar listening on addr, when it runs apart; else 0.
	pidOf(addr string) int
	// sidecar starts a sidecar configured by yaml.
	sidecar(yaml string) error
	// pids are the processes besides this one whose CPU counts as the parts'.
	pids() []int
}

// inProcess runs them in the benchmark's process (they end with it).
type inProcess struct {
	ctx context.Context
	log *slog.Logger
}

func (p *inProcess) pids() []int { return nil }

func (p *inProcess) pidOf(string) int { return 0 }

func (p *inProcess) app() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	a := testservice.NewApp()
	a.KeepNoHistory()
	a.Serve(l)
	return l.Addr().String(), nil
}

func (p *inProcess) relay(to string) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go testservice.Relay(l, to)
	return l.Addr().String(), nil
}

func (p *inProcess) outbound(cfg func(listen string) string) (string, error) {
	s, err := p.start(cfg("127.0.0.1:0"))
	if err != nil {
		return "", err
	}
	return s.OutboundAddr().String(), nil
}

func (p *inProcess) sidecar(yaml string) error {
	_, err := p.start(yaml)
	return err
}

func (p *inProcess) start(yaml string) (*sidecar.Sidecar, error) {
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		return nil, err
	}
	s, err := sidecar.Start(p.ctx, sidecar.Options{Config: cfg, Logger: p.log})
	if err != nil {
		return nil, err
	}
	return s, waitFor(func() bool { return s.Ready() })
}

// processes runs each as its own process, from binaries it builds, as they are deployed.
type processes struct {
	dir   string
	procs []*exec.Cmd
	// listening is the pid of each outbound sidecar by the address it listens on.
	listening map[string]int
	// sidecarProcs, when above 0, is the sidecars' -procs (else their default, 1).
	sidecarProcs int
}

// newProcesses builds the binaries into dir; with a git revision against, also the sidecar of
// that revision, as dir/sidecar-against.
func newProcesses(dir string, sidecarProcs int, against string) (*processes, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	if err := command(root, "go", "build", "-o", dir+"/", "./cmd/sidecar", "./internal/testservice/testapp"); err != nil {
		return nil, err
	}
	if against != "" {
		src, tar := filepath.Join(dir, "against"), filepath.Join(dir, "against.tar")
		if err := os.Mkdir(src, 0o755); err != nil {
			return nil, err
		}
		if err := command(root, "git", "archive", "-o", tar, against); err != nil {
			return nil, err
		}
		if err := command(src, "tar", "-xf", tar); err != nil {
			return nil, err
		}
		if err := command(src, "go", "build", "-o", filepath.Join(dir, "sidecar-against"), "./cmd/sidecar"); err != nil {
			return nil, err
		}
	}
	return &processes{dir: dir, sidecarProcs: sidecarProcs}, nil
}

// command runs name in dir and returns its output with the error.
func command(dir, name string, args ...string) error {
	c := exec.Command(name, args...)
	c.Dir = dir
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func (p *processes) command(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(p.dir, bin), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

func (p *processes) start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	p.procs = append(p.procs, cmd)
	return nil
}

func (p *processes) pids() []int {
	var out []int
	for _, c := range p.procs {
		out = append(out, c.Process.Pid)
	}
	return out
}

func (p *processes) app() (string, error) { return p.startTestapp() }

func (p *processes) relay(to string) (string, error) { return p.startTestapp("-relay-to", to) }

// startTestapp starts testapp on a port it picks, and returns the address it prints once it
// listens.
func (p *processes) startTestapp(args ...string) (string, error) {
	cmd := p.command("testapp", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := p.start(cmd); err != nil {
		return "", err
	}
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("testapp %s printed no address: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(addr), nil
}

// outbound starts an outbound sidecar on a free port: a sidecar process binds the address of
// its config and does not say which it bound.
func (p *processes) outbound(cfg func(listen string) string) (string, error) {
	return p.outboundOf("sidecar", cfg)
}

// outboundAt starts an outbound sidecar built at the -against revision.
func (p *processes) outboundAt(cfg func(listen string) string) (string, error) {
	return p.outboundOf("sidecar-against", cfg)
}

func (p *processes) outboundOf(bin string, cfg func(listen string) string) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	if err := p.startSidecar(bin, cfg(addr)); err != nil {
		return "", err
	}
	if p.listening == nil {
		p.listening = map[string]int{}
	}
	p.listening[addr] = p.procs[len(p.procs)-1].Process.Pid
	return addr, nil
}

func (p *processes) pidOf(addr string) int { return p.listening[addr] }

func (p *processes) sidecar(yaml string) error { return p.startSidecar("sidecar", yaml) }

func (p *processes) startSidecar(bin, yaml string) error {
	f := filepath.Join(p.dir, fmt.Sprintf("sidecar-%d.yaml", len(p.procs)))
	if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
		return err
	}
	health, err := freeAddr()
	if err != nil {
		return err
	}
	args := []string{"run", "-config", f, "-health", health, "-log-level", "warn"}
	if p.sidecarProcs > 0 {
		args = append(args, "-procs", fmt.Sprint(p.sidecarProcs))
	}
	if err := p.start(p.command(bin, args...)); err != nil {
		return err
	}
	return waitFor(func() bool {
		resp, err := http.Get("http://" + health + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// stop ends the processes it started (by their pids) and waits for them.
func (p *processes) stop() {
	for _, c := range p.procs {
		c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range p.procs {
		c.Wait()
	}
}

func waitFor(cond func() bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// freeAddr returns a loopback address nothing listens on, for a sidecar to bind: a sidecar
// binds the addresses of its config itself.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
