package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// proc is a process a test started; the test's cleanup ends it.
type proc struct {
	t     *testing.T
	label string // names the log file
	bin   string
	args  []string
	cmd   *exec.Cmd
	done  chan struct{}
}

// startProc starts bin (a binary of env.bin) with args; its output goes to a log file that a
// failing test prints.
func startProc(t *testing.T, label, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, label: label, bin: bin, args: args}
	p.start()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath())
			t.Logf("log of %s:\n%s", p.label, tail(b, 4000))
		}
	})
	return p
}

func (p *proc) logPath() string {
	return filepath.Join(env.dir, fmt.Sprintf("%s-%s.log", p.t.Name(), p.label))
}

func (p *proc) start() {
	p.t.Helper()
	if err := os.MkdirAll(filepath.Dir(p.logPath()), 0o755); err != nil {
		p.t.Fatal(err)
	}
	f, err := os.OpenFile(p.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	p.cmd = exec.Command(filepath.Join(env.bin, p.bin), p.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("starting %s: %v", p.label, err)
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); f.Close(); close(p.done) }()
}

// kill ends the process at once, as a crash would.
func (p *proc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// restart starts the process again with the same arguments.
func (p *proc) restart() { p.start() }

func tail(b []byte, n int) string {
	if len(b) > n {
		return "..." + string(b[len(b)-n:])
	}
	return string(b)
}

// startSidecarProc writes cfg to a file and runs the sidecar binary on it, with its health
// endpoint on health; it returns once /readyz answers.
func startSidecarProc(t *testing.T, name, cfg, health string) *proc {
	t.Helper()
	path := filepath.Join(env.dir, fmt.Sprintf("%s-%s.yaml", t.Name(), name))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, name, "sidecar", "run", "-config", path, "-health", health, "-log-level", "debug")
	waitReady(t, health)
	return p
}

func waitReady(t *testing.T, health string) {
	t.Helper()
	eventually(t, 30*time.Second, "sidecar ready at "+health, func() bool {
		resp, err := http.Get("http://" + health + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}
