package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// PodNet is a pod network made of real network namespaces, as a Kubernetes node has: a node
// namespace holding a bridge with the node's address on it (.1, where RunPod's probes come
// from), and one namespace per pod with its own address on it (a veth pair: eth0 in the pod,
// its peer on the bridge). Every pod resolves every pod's name through
// its namespace's hosts file, which `ip netns exec` mounts over /etc/hosts. The addresses
// exist only inside these namespaces; nothing is added to the host's own namespace. It needs
// root and ip (iproute2).
type PodNet struct {
	node string
	pods map[string]*Pod
}

// Pod is one pod of a PodNet.
type Pod struct {
	Name string     // its name in the other pods' hosts files
	NS   string     // its network namespace (ip netns)
	Addr netip.Addr // its address, on eth0
	ip   string     // the ip tool
	node string     // the node's namespace, where the kubelet's probes come from (RunPod)
}

// podSubnet is the pod network's range: private, and only inside the rig's namespaces.
const podSubnet = "10.213.0."

// NewPodNet makes the namespaces of a pod network with the named pods and removes them, and
// their /etc/netns directories, when the test ends. Namespaces are named rg-<pid>-<pod> (and
// rg-<pid>-node), so the rigs living at once in one process need distinct pod names; a
// namespace of the same name, left by a crashed run, is deleted first. An entry may give more
// names after the pod's, separated by spaces ("restate restate.restate.svc"): the hosts files
// resolve them to the pod too, as cluster DNS resolves a Service's names.
func NewPodNet(t testing.TB, specs ...string) *PodNet {
	t.Helper()
	pods := make([]string, len(specs))
	if os.Geteuid() != 0 {
		t.Fatal("the pod network is made of network namespaces (ip netns), which needs root: run the tests as root, as CI does")
	}
	if len(pods) > 250 {
		t.Fatalf("NewPodNet: %d pods, the /24 holds 250", len(pods))
	}
	ip := Tool(t, "ip")
	prefix := fmt.Sprintf("rg-%d-", os.Getpid())
	n := &PodNet{node: prefix + "node", pods: map[string]*Pod{}}
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
	all := []string{n.node}
	for i, spec := range specs {
		names := strings.Fields(spec)
		if len(names) == 0 {
			t.Fatalf("NewPodNet: pod %d has no name", i)
		}
		name := names[0]
		if _, dup := n.pods[name]; dup || name == "node" {
			t.Fatalf("NewPodNet: pod name %q twice, or the node namespace's", name)
		}
		p := &Pod{Name: name, NS: prefix + name, Addr: netip.MustParseAddr(fmt.Sprintf("%s%d", podSubnet, i+2)), ip: ip, node: n.node}
		n.pods[name] = p
		pods[i] = name
		all = append(all, p.NS)
		fmt.Fprintf(&hosts, "%s\t%s\n", p.Addr, strings.Join(names, " "))
	}
	for _, ns := range all {
		removeNetns(ip, ns) // a crashed run's, which would make `ip netns add` fail
	}
	t.Cleanup(func() {
		for _, ns := range all {
			if err := removeNetns(ip, ns); err != nil {
				t.Errorf("removing namespace %s: %v", ns, err)
			}
		}
	})
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range all {
		run("netns", "add", ns)
		run("-n", ns, "link", "set", "lo", "up")
	}
	run("-n", n.node, "link", "add", "br0", "type", "bridge")
	// The node has an address on the bridge, as a node has on its pod network, so the
	// kubelet's probes reach a pod's address from outside the pod.
	run("-n", n.node, "addr", "add", podSubnet+"1/24", "dev", "br0")
	run("-n", n.node, "link", "set", "br0", "up")
	for i, name := range pods {
		p := n.pods[name]
		// Both ends are made inside the rig's namespaces, never in the host's.
		veth := fmt.Sprintf("veth%d", i)
		run("-n", n.node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", p.NS)
		run("-n", n.node, "link", "set", veth, "master", "br0", "up")
		run("-n", p.NS, "addr", "add", p.Addr.String()+"/24", "dev", "eth0")
		run("-n", p.NS, "link", "set", "eth0", "up")
		dir := filepath.Join("/etc/netns", p.NS)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// removeNetns deletes the namespace ns and its /etc/netns directory, if they exist.
func removeNetns(ip, ns string) error {
	var err error
	if _, serr := os.Stat("/run/netns/" + ns); serr == nil {
		if out, derr := exec.Command(ip, "netns", "delete", ns).CombinedOutput(); derr != nil {
			err = fmt.Errorf("ip netns delete %s: %v: %s", ns, derr, bytes.TrimSpace(out))
		}
	}
	if rerr := os.RemoveAll(filepath.Join("/etc/netns", ns)); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// Pod returns the pod named name.
func (n *PodNet) Pod(name string) *Pod {
	p, ok := n.pods[name]
	if !ok {
		panic("testenv: no pod " + name)
	}
	return p
}

// Tool finds a system tool on PATH or in /usr/sbin, where Debian puts them and where a PATH may
// not look, and fails the test, saying how to install it, when it is missing.
func Tool(t testing.TB, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatalf("%s is missing: run `make tools` (or, on Debian, apt-get install -y iptables iproute2)", name)
	return ""
}

// do runs f in the pod's namespace (InNetns).
func (p *Pod) do(f func() error) error { return InNetns(p.NS, f) }

// InNetns runs f on a thread moved into the network namespace ns, so the sockets f makes and
// the processes it starts are there (sockets stay there, whichever thread uses them later),
// then moves the thread back.
func InNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(home)
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := f()
		// A thread that cannot go back stays locked, so it ends with this goroutine instead
		// of running other goroutines in the namespace.
		if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back from %s: %w", ns, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// RunTool runs a system tool and fails the test with its output when it fails.
func RunTool(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// DialContext dials addr from inside the pod, as one of its processes would (its iptables
// rules apply); names are not resolved through the pod's hosts file.
func (p *Pod) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := p.do(func() (err error) {
		c, err = new(net.Dialer).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens on addr inside the pod.
func (p *Pod) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := p.do(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// HTTPClient makes its connections from inside the pod.
func (p *Pod) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: p.DialContext}, Timeout: 10 * time.Second}
}

// Command runs name inside the pod (`ip netns exec`, so it resolves names through the pod's
// hosts file) as uid (and the same gid, no supplementary groups). It dies with the test
// process; ctx kills it by its pid.
func (p *Pod) Command(ctx context.Context, uid int, name string, args ...string) *exec.Cmd {
	argv := []string{"netns", "exec", p.NS}
	if uid != 0 {
		// The parent-death signal is cleared when the uid changes, so setpriv sets it again.
		argv = append(argv, "setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid),
			"--clear-groups", "--pdeathsig=KILL", "--")
	}
	cmd := exec.CommandContext(ctx, p.ip, append(append(argv, name), args...)...)
	// ip and setpriv exec the command, so cmd.Process is the command itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Proc is a process a test started in a pod; the test's cleanup kills it by its pid.
type Proc struct {
	Cmd  *exec.Cmd
	done chan struct{}
	out  *lineLog
}

// Start starts cmd (from Command), its output going to the test log line by line, prefixed
// with label, and kills it when the test ends.
func Start(t testing.TB, label string, cmd *exec.Cmd) *Proc {
	t.Helper()
	p, err := start(t, label, cmd)
	if err != nil {
		t.Fatalf("starting %s: %v", label, err)
	}
	return p
}

// start is Start returning its error, for the goroutines (RunPod's) that may not fail the
// test themselves.
func start(t testing.TB, label string, cmd *exec.Cmd) (*Proc, error) {
	w := &lineLog{t: t, label: label}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, done: make(chan struct{}), out: w}
	go func() { cmd.Wait(); w.flush(); close(p.done) }()
	t.Cleanup(p.Kill)
	return p, nil
}

// Kill ends the process at once (SIGKILL, by its pid) and waits for it and its output.
func (p *Proc) Kill() {
	p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Output is all the process wrote so far, stdout and stderr interleaved as written.
func (p *Proc) Output() string {
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	return string(p.out.all)
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// lineLog writes a process's output to the test log, a line at a time.
type lineLog struct {
	t     testing.TB
	label string
	mu    sync.Mutex
	buf   []byte
	all   []byte // everything written, for Output
}

func (w *lineLog) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	w.all = append(w.all, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		w.t.Logf("%s: %s", w.label, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

func (w *lineLog) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.t.Logf("%s: %s", w.label, w.buf)
		w.buf = nil
	}
}
