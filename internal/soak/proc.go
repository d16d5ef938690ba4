package soak

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Proc is a process of the rig, which it may kill and restart; its output is appended to a
// log file that outlives restarts.
type Proc struct {
	Label string
	Log   string // the log file
	bin   string
	args  []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newProc(dir, label, bin string, args ...string) *Proc {
	return &Proc{Label: label, Log: filepath.Join(dir, label+".log"), bin: bin, args: args}
}

// Start starts the process; it dies with the rig's process (Pdeathsig).
func (p *Proc) Start() error {
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", p.Label, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	return nil
}

// Kill ends the process at once (SIGKILL), as a crash would, and waits for it.
func (p *Proc) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

// Pid is the running process's id, 0 when it has exited.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// sidecar is a sidecar process with its health endpoint.
type sidecar struct {
	*Proc
	health string // host:port
}

// Restart kills the sidecar if it runs and starts it again, and waits until it is ready.
func (s *sidecar) Restart() error {
	s.Kill()
	if err := s.Start(); err != nil {
		return err
	}
	return s.waitReady(30 * time.Second)
}

func (s *sidecar) waitReady(timeout time.Duration) error {
	return waitFor(timeout, s.Label+" ready at "+s.health+"/readyz", func() bool {
		resp, err := http.Get("http://" + s.health + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func waitFor(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not so after %s: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
