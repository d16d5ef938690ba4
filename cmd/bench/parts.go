package main

import (
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

// runner starts the app and sidecars of the measured paths, and returns once they serve.
type runner interface {
	app(addr string) error
	// relay starts a plain TCP relay from addr to the address to.
	relay(addr, to string) error
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

func (p *inProcess) app(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	a := testservice.NewApp()
	a.KeepNoHistory()
	a.Serve(l)
	return nil
}

func (p *inProcess) relay(addr, to string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go testservice.Relay(l, to)
	return nil
}

func (p *inProcess) sidecar(yaml string) error {
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		return err
	}
	s, err := sidecar.Start(p.ctx, sidecar.Options{Config: cfg, Logger: p.log})
	if err != nil {
		return err
	}
	return waitFor(func() bool { return s.Ready() })
}

// processes runs each as its own process, from binaries it builds, as they are deployed.
type processes struct {
	dir   string
	procs []*exec.Cmd
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

func (p *processes) start(bin string, args ...string) error {
	cmd := exec.Command(filepath.Join(p.dir, bin), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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

func (p *processes) app(addr string) error {
	return p.startListening(addr, "testapp", "-listen", addr)
}

func (p *processes) relay(addr, to string) error {
	return p.startListening(addr, "testapp", "-listen", addr, "-relay-to", to)
}

// startListening starts bin and waits until addr takes connections.
func (p *processes) startListening(addr, bin string, args ...string) error {
	if err := p.start(bin, args...); err != nil {
		return err
	}
	return waitFor(func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (p *processes) sidecar(yaml string) error { return p.startSidecar("sidecar", yaml) }

// sidecarAt starts the sidecar built at the -against revision.
func (p *processes) sidecarAt(yaml string) error { return p.startSidecar("sidecar-against", yaml) }

func (p *processes) startSidecar(bin, yaml string) error {
	f := filepath.Join(p.dir, fmt.Sprintf("sidecar-%d.yaml", len(p.procs)))
	if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
		return err
	}
	health, err := freeAddrs(1)
	if err != nil {
		return err
	}
	args := []string{"run", "-config", f, "-health", health[0], "-log-level", "warn"}
	if p.sidecarProcs > 0 {
		args = append(args, "-procs", fmt.Sprint(p.sidecarProcs))
	}
	if err := p.start(bin, args...); err != nil {
		return err
	}
	return waitFor(func() bool {
		resp, err := http.Get("http://" + health[0] + "/readyz")
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

func freeAddrs(n int) ([]string, error) {
	var out []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}
