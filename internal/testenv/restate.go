package testenv

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mr-tron/base58"
)

// RestateOptions configure a Restate server.
type RestateOptions struct {
	// Identity makes the server sign its requests to deployments; IdentityKey is then the public
	// key deployments verify with.
	Identity bool
	// TracingEndpoint, when set, is the server's OTLP tracing endpoint (otlp+http://...).
	TracingEndpoint string
	// Log receives the server's output; default a file in the base dir.
	Log *os.File
	// Pod, when set, runs the server inside that pod of a PodNet, bound to the pod's address on
	// Restate's default ports, instead of on loopback ports of the test's namespace.
	Pod *Pod
}

// Restate is a running Restate server.
type Restate struct {
	Ingress     string // http://127.0.0.1:port
	Admin       string
	IdentityKey string // publickeyv1_..., when Identity

	bin, dir, conf string
	logFile        *os.File
	pod            *Pod
	http           *http.Client // reaches the server where it listens
	args           []string     // more restate-server arguments
	cmd            *exec.Cmd
	exited         chan struct{}
}

// RestateBinary finds the pinned restate-server: $RESTATE_SERVER_BIN, or the one
// scripts/tools.sh installed under the repository's .tools.
func RestateBinary() (string, error) {
	return npmBinary("RESTATE_SERVER_BIN", "restate-server")
}

// npmBinary finds the pinned program bin of npm's @restatedev/bin: $env, or the one
// scripts/tools.sh installed under the repository's .tools.
func npmBinary(env, bin string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, ".tools/node_modules/@restatedev/"+bin+"-linux-x64/bin", bin)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found at %s: run `make tools` (scripts/tools.sh) to install the pinned @restatedev/%s, or set %s", bin, p, bin, env)
	}
	return p, nil
}

// RepoRoot is the directory of the repository's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/restate-grpc/restate-grpc\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the restate-grpc repository")
		}
		dir = parent
	}
}

// FreePort returns a loopback port nobody listens on right now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartRestate starts a server in a new base dir under dir and waits until it is healthy.
func StartRestate(dir string, o RestateOptions) (*Restate, error) {
	return retryBind(dir, func(dir string) (*Restate, error) { return startRestate(dir, o) })
}

// errAddrInUse is a server that exited because a port it was given was taken: by another
// test's process, between FreePort and the server's bind.
var errAddrInUse = errors.New("a port it was given was taken")

// retryBind starts again, in a new dir with new ports, a server or cluster that lost a port
// to a test running beside it.
func retryBind[T any](dir string, start func(dir string) (T, error)) (T, error) {
	for try := 1; ; try++ {
		v, err := start(dir)
		if err == nil || !errors.Is(err, errAddrInUse) || try == 5 {
			return v, err
		}
		dir = filepath.Join(dir, fmt.Sprintf("retry-%d", try))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return v, err
		}
	}
}

func startRestate(dir string, o RestateOptions) (*Restate, error) {
	bin, err := RestateBinary()
	if err != nil {
		return nil, err
	}
	host, ports := "127.0.0.1", []int{8080, 9070, 5122} // a pod's own namespace has every port free
	r := &Restate{bin: bin, dir: dir, conf: filepath.Join(dir, "restate.toml"), pod: o.Pod, http: http.DefaultClient}
	if o.Pod != nil {
		host, r.http = o.Pod.Addr.String(), o.Pod.HTTPClient()
	} else {
		for i := range ports {
			if ports[i], err = FreePort(); err != nil {
				return nil, err
			}
		}
	}
	r.Ingress = fmt.Sprintf("http://%s:%d", host, ports[0])
	r.Admin = fmt.Sprintf("http://%s:%d", host, ports[1])
	conf := fmt.Sprintf(`cluster-name = "rgtest"
bind-address = "%[4]s:%[3]d"
advertised-address = "http://%[4]s:%[3]d/"
[admin]
bind-address = "%[4]s:%[2]d"
[ingress]
bind-address = "%[4]s:%[1]d"
`, ports[0], ports[1], ports[2], host)
	if o.TracingEndpoint != "" {
		conf = fmt.Sprintf("tracing-endpoint = %q\n", o.TracingEndpoint) + conf
	}
	if o.Identity {
		keyFile := filepath.Join(dir, "identity.pem")
		if r.IdentityKey, err = writeIdentityKey(keyFile); err != nil {
			return nil, err
		}
		conf += fmt.Sprintf("[worker.invoker]\nrequest-identity-private-key-pem-file = %q\n", keyFile)
	}
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	r.logFile = o.Log
	if r.logFile == nil {
		if r.logFile, err = os.Create(filepath.Join(dir, "restate.log")); err != nil {
			return nil, err
		}
	}
	if err := r.start(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Restate) start() error {
	if err := r.spawn(); err != nil {
		return err
	}
	return r.waitHealthy()
}

// spawn starts the server process without waiting for it: a cluster's nodes become healthy only
// once enough of them run.
func (r *Restate) spawn() error {
	args := append([]string{"--no-logo", "--base-dir", filepath.Join(r.dir, "data"), "-c", r.conf}, r.args...)
	if r.pod != nil {
		r.cmd = r.pod.Command(context.Background(), 0, r.bin, args...)
	} else {
		r.cmd = exec.Command(r.bin, args...)
		r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the tests
	}
	r.cmd.Stdout, r.cmd.Stderr = r.logFile, r.logFile
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", r.bin, err)
	}
	r.exited = make(chan struct{})
	go func() { r.cmd.Wait(); close(r.exited) }()
	return nil
}

// waitHealthy waits until the ingress and the admin API answer 200; a server that is not healthy
// by then is stopped.
func (r *Restate) waitHealthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, u := range []string{r.Ingress + "/restate/health", r.Admin + "/health"} {
		if err := waitHTTP(ctx, r.http, u, r.exited); err != nil {
			r.Stop()
			last := r.lastLogLine()
			if strings.Contains(last, "Address in use") {
				err = fmt.Errorf("%w: %w", err, errAddrInUse)
			}
			return fmt.Errorf("restate server (log %s): %w; it logged last: %s", r.logFile.Name(), err, last)
		}
	}
	return nil
}

// lastLogLine is the last line the server logged, what it says when it exits early.
func (r *Restate) lastLogLine() string {
	b, err := os.ReadFile(r.logFile.Name())
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func waitHTTP(ctx context.Context, c *http.Client, url string, exited <-chan struct{}) error {
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("exited before it was healthy")
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy: %v", url, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends the server (SIGTERM, then SIGKILL after 10s) and waits for it.
func (r *Restate) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	terminate(r.cmd, r.exited)
}

// terminate ends a process the test started (SIGTERM, SIGKILL after 10s) and waits for it:
// exited is closed once it is reaped.
func terminate(cmd *exec.Cmd, exited <-chan struct{}) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// Pid is the server's process id.
func (r *Restate) Pid() int { return r.cmd.Process.Pid }

// Kill ends the server at once (SIGKILL), as a crash would.
func (r *Restate) Kill() {
	r.cmd.Process.Kill()
	<-r.exited
}

// Restart starts the server again on the same ports and base dir.
func (r *Restate) Restart() error { return r.start() }

// writeIdentityKey writes a new ed25519 private key as PKCS#8 PEM and returns its public key
// in Restate's publickeyv1_<base58> form.
func writeIdentityKey(path string) (string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", err
	}
	return "publickeyv1_" + base58.Encode(pub), nil
}
