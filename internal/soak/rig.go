package soak

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/restate-grpc/restate-grpc/internal/testenv"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// Options configure a Rig.
type Options struct {
	// Dir holds the cluster's base dirs, the logs, the sidecars' configs and the app's journal.
	Dir string
	// Bin holds the sidecar and testapp binaries (Build makes them).
	Bin string
	// Nodes is the cluster's size; default 3.
	Nodes int
	// AutoKey sets the route's autoIdempotencyKey: calls without a key get one of the
	// outbound sidecar's.
	AutoKey bool
}

// Rig is the whole path, every part a process: caller (this process) -> outbound sidecar ->
// any node of a Restate cluster -> inbound sidecar -> test app. The sidecars know every node:
// the outbound one all ingresses (and admin APIs, for attach), the inbound one all admin APIs
// to register through.
type Rig struct {
	Cluster           *testenv.Cluster
	App               *Proc
	Inbound, Outbound *Sidecar
	// Conn is the callers' connection to the outbound sidecar.
	Conn    *grpc.ClientConn
	journal string
}

// Sidecar is a sidecar process; Restart waits until it is ready again.
type Sidecar = sidecar

// Build builds the sidecar and testapp binaries into dir from the repository this runs in.
func Build(dir string) error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	c := exec.Command("go", "build", "-o", dir+"/", "./cmd/sidecar", "./internal/testservice/testapp")
	c.Dir = root
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("building the sidecar and testapp: %v\n%s", err, out)
	}
	return nil
}

const echoCall = "/rgtest.v1.Echo/Call"

// Start starts the cluster, the app and both sidecars, and returns once a call through them
// has succeeded. Stop ends them.
func Start(ctx context.Context, o Options) (r *Rig, err error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	r = &Rig{journal: filepath.Join(o.Dir, "executions")}
	defer func() {
		if err != nil {
			r.Stop()
		}
	}()
	if r.Cluster, err = testenv.StartCluster(filepath.Join(o.Dir, "cluster"), testenv.ClusterOptions{Nodes: o.Nodes}); err != nil {
		return r, err
	}
	addrs, err := freeAddrs(5)
	if err != nil {
		return r, err
	}
	appAddr, inAddr, outAddr, inHealth, outHealth := addrs[0], addrs[1], addrs[2], addrs[3], addrs[4]
	r.App = newProc(o.Dir, "app", filepath.Join(o.Bin, "testapp"), "-listen", appAddr, "-journal", r.journal)
	if err := r.App.Start(); err != nil {
		return r, err
	}
	admins, ingresses := yamlList(r.Cluster.Admins()), yamlList(r.Cluster.Ingresses())
	if r.Inbound, err = startSidecar(o, "inbound", inHealth, fmt.Sprintf(`
inbound:
  app: %s
  listen: %s
  register: {admin: %s, uri: "http://%[2]s"}
  services: [{name: rgtest.v1.Echo, handlers: {Call: ""}}]
`, appAddr, inAddr, admins)); err != nil {
		return r, err
	}
	route := "{match: rgtest.v1.Echo/Call}"
	if o.AutoKey {
		route = "{match: rgtest.v1.Echo/Call, autoIdempotencyKey: true}"
	}
	if r.Outbound, err = startSidecar(o, "outbound", outHealth, fmt.Sprintf(`
outbound:
  listen: %s
  ingress: %s
  admin: %s
  routes: [%s]
`, outAddr, ingresses, admins, route)); err != nil {
		return r, err
	}
	if r.Conn, err = grpc.NewClient(outAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return r, err
	}
	// The first call of a new registration takes Restate most of a second; make it here.
	return r, waitFor(30*time.Second, "a first call through the rig", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return r.Conn.Invoke(cctx, echoCall, &testpb.Req{Text: "warm-up"}, &testpb.Resp{}) == nil
	})
}

func startSidecar(o Options, label, health, cfg string) (*Sidecar, error) {
	path := filepath.Join(o.Dir, label+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	s := &sidecar{Proc: newProc(o.Dir, label, filepath.Join(o.Bin, "sidecar"), "run", "-config", path, "-health", health, "-log-level", "info"), health: health}
	if err := s.Start(); err != nil {
		return nil, err
	}
	if err := s.waitReady(30 * time.Second); err != nil {
		return s, fmt.Errorf("%w (log: %s)", err, s.Log)
	}
	return s, nil
}

// Stop ends every part.
func (r *Rig) Stop() {
	if r.Conn != nil {
		r.Conn.Close()
	}
	for _, p := range []*Proc{r.procOf(r.Outbound), r.procOf(r.Inbound), r.App} {
		if p != nil {
			p.Kill()
		}
	}
	if r.Cluster != nil {
		r.Cluster.Stop()
	}
}

func (r *Rig) procOf(s *Sidecar) *Proc {
	if s == nil {
		return nil
	}
	return s.Proc
}

func yamlList(us []string) string { return "[" + strings.Join(us, ", ") + "]" }

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
