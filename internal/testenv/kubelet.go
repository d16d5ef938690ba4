package testenv

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Image is what the kubelet emulator knows of a container image. The emulator has no images:
// a container's root is the host's under a writable layer of its own, with the image's Files
// bound over it read-only (so a container cannot write into the host's copy).
type Image struct {
	Entrypoint []string          // ENTRYPOINT
	Cmd        []string          // CMD
	Env        []string          // ENV, as NAME=value
	WorkingDir string            // WORKDIR; default /
	Files      map[string]string // path in the image -> host file or directory
}

// PodOptions is what a kubelet gets from the rest of the cluster for a pod: its images, the
// services' variables, the objects its volumes and variables read, and its node.
type PodOptions struct {
	Images     map[string]Image             // by the containers' image field; a missing image fails the pod, as a failed pull does
	ServiceEnv map[string]string            // the service links (KUBERNETES_SERVICE_HOST, ...); with enableServiceLinks false, only the KUBERNETES_ ones
	ConfigMaps map[string]map[string]string // the pod's namespace's, by name
	Secrets    map[string]map[string][]byte // likewise
	// ServiceAccountToken is the token a projected serviceAccountToken source writes (the
	// kubelet would ask the API server for one).
	ServiceAccountToken string
	// NodeName is spec.nodeName when the stored pod has none (no scheduler bound it);
	// default "node".
	NodeName string
	// Allocatable is the node's, which resourceFieldRef reports for a limit a container does
	// not set; default this machine's CPUs and memory.
	Allocatable corev1.ResourceList
	// MaxGracePeriod bounds terminationGracePeriodSeconds (default 30s, too long for a
	// test); default 5s.
	MaxGracePeriod time.Duration
}

// PodRun is a pod RunPod runs.
type PodRun struct {
	t     testing.TB
	net   *Pod
	pod   *corev1.Pod
	opts  PodOptions
	tools kubeletTools
	dir   string            // the pod's directory on the host: its volumes, its containers' scratch mounts
	vols  map[string]string // volume name -> its directory
	api   map[string]bool   // the volumes of API data (downwardAPI, configMap, secret, projected), always mounted read-only
	ctrs  map[string]*ctr   // by container name
	order []*ctr            // init containers then containers, as in the spec

	octx    context.Context // the start sequence's; Stop cancels it
	ocancel context.CancelFunc
	started chan struct{} // closed when the start sequence has ended, err set
	done    chan struct{} // closed when the pod's goroutine (start, and stop on failure) has ended
	err     error         // why the pod failed to start

	mu       sync.Mutex
	stopping bool // no container starts any more
	stopOnce sync.Once

	meta   sync.Mutex // guards the pod's labels and annotations, which SetAnnotations changes
	update sync.Mutex // one SetAnnotations at a time
}

// ctr is one container of a PodRun.
type ctr struct {
	spec    *corev1.Container
	init    bool // an init container
	native  bool // an init container with restartPolicy Always: a native sidecar
	env     []string
	setpriv []string      // setpriv's options giving the container's user, groups and capabilities
	proc    *Proc         // set under PodRun.mu, once
	up      chan struct{} // closed once the container runs: its root made, its command exec'd
	exited  chan struct{} // closed once proc has exited, code set
	code    int
}

// kubeletTools are the host tools a container's start goes through.
type kubeletTools struct{ bash, mount, umount, pivotRoot, mkdir, ln, env, setpriv, nsenter string }

// RunPod runs pod, a pod as the API server stored it, in the network namespace p, as a
// kubelet and a container runtime would: its volumes, then its init containers in order
// (each plain one run to success, each native sidecar started and its startup probe passed),
// then its containers in order (each one's postStart hook returned before the next starts),
// each with the environment, command, user, capabilities and mounts its spec gives it.
//
// Each container is a process in p's network namespace, with UTS and PID namespaces of its
// own and a mount namespace where its root is made of the host's directories under a
// writable layer of its own, with its image's files and its volumes mounted at their paths;
// nothing is added to the host's filesystem but the pod's directory, which goes with the
// test. A container sees the host's directories as they were when it started: what a test
// shares with a running pod goes through a volume (VolumeDir) or an image's files. Probes
// and hooks run as the kubelet runs them: exec in the container, httpGet and tcpSocket from
// the node's namespace to the pod's address.
//
// RunPod returns at once; the test's end kills what still runs, as does ctx's. Containers are
// not restarted: an exit is reported, a failed init container, startup probe or postStart
// hook fails the pod (the kubelet would retry them, backing off, under restartPolicy Always
// or OnFailure), and liveness probes are not run. Seccomp, AppArmor, cgroups, the
// termination log, the kubelet's resolv.conf and fsGroup's ownership change are not emulated.
func RunPod(t testing.TB, ctx context.Context, p *Pod, pod *corev1.Pod, opts PodOptions) *PodRun {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("RunPod mounts volumes in mount namespaces and changes users, which needs root: run the tests as root, as CI does")
	}
	if pod.Spec.HostNetwork || pod.Spec.HostPID || pod.Spec.HostIPC {
		t.Fatalf("pod %s shares the node's namespaces (hostNetwork, hostPID or hostIPC), which the emulator does not", pod.Name)
	}
	r := &PodRun{
		t: t, net: p, pod: pod.DeepCopy(), opts: opts,
		vols: map[string]string{}, api: map[string]bool{}, ctrs: map[string]*ctr{},
		started: make(chan struct{}), done: make(chan struct{}),
		tools: kubeletTools{bash: Tool(t, "bash"), mount: Tool(t, "mount"), umount: Tool(t, "umount"),
			pivotRoot: Tool(t, "pivot_root"), mkdir: Tool(t, "mkdir"), ln: Tool(t, "ln"), env: Tool(t, "env"),
			setpriv: Tool(t, "setpriv"), nsenter: Tool(t, "nsenter")},
	}
	// Not t.TempDir: its name comes from the test's, whose commas and colons an overlay's
	// options cannot hold. Removed after the pod's cleanup (registered later, run earlier).
	dir, err := os.MkdirTemp("", "restate-grpc-pod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing the pod's directory: %v", err)
		}
	})
	r.dir = dir
	if r.pod.Spec.NodeName == "" {
		r.pod.Spec.NodeName = cmp.Or(opts.NodeName, "node")
	}
	if r.opts.Allocatable == nil {
		var si syscall.Sysinfo_t
		if err := syscall.Sysinfo(&si); err != nil {
			t.Fatal(err)
		}
		r.opts.Allocatable = corev1.ResourceList{
			corev1.ResourceCPU:    *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
			corev1.ResourceMemory: *resource.NewQuantity(int64(si.Totalram)*int64(si.Unit), resource.BinarySI),
		}
	}
	for i := range r.pod.Spec.InitContainers {
		c := &r.pod.Spec.InitContainers[i]
		r.add(&ctr{spec: c, init: true, native: c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways})
	}
	for i := range r.pod.Spec.Containers {
		r.add(&ctr{spec: &r.pod.Spec.Containers[i]})
	}
	for _, v := range r.pod.Spec.Volumes {
		if err := r.volume(v); err != nil {
			t.Fatalf("pod %s: volume %s: %v", r.pod.Name, v.Name, err)
		}
	}
	r.octx, r.ocancel = context.WithCancel(context.Background())
	go func() {
		defer close(r.done)
		r.err = r.start()
		close(r.started)
		if r.err != nil {
			if r.octx.Err() == nil { // not stopped while starting
				t.Logf("pod %s failed: %v", r.pod.Name, r.err)
			}
			r.Stop()
		}
	}()
	stopKill := context.AfterFunc(ctx, r.kill)
	t.Cleanup(func() {
		stopKill()
		r.kill()
		<-r.done
		for _, c := range r.order {
			if c.proc != nil { // after kill, no container starts: c.proc is set for good
				<-c.exited
			}
		}
	})
	return r
}

func (r *PodRun) add(c *ctr) {
	c.up, c.exited = make(chan struct{}), make(chan struct{})
	r.ctrs[c.spec.Name] = c
	r.order = append(r.order, c)
}

// running says whether c runs (or ran).
func (c *ctr) running() bool {
	select {
	case <-c.up:
		return true
	default:
		return false
	}
}

// start runs the pod's start sequence, returning why the pod failed.
func (r *PodRun) start() error {
	for _, c := range r.order {
		if err := r.startContainer(c); err != nil {
			return err
		}
		switch {
		case c.native:
			if p := c.spec.StartupProbe; p != nil {
				if err := r.probe(r.octx, c, &p.ProbeHandler, p, true); err != nil {
					return fmt.Errorf("init container %s: startup probe: %w", c.spec.Name, err)
				}
			}
		case c.init:
			select {
			case <-c.exited:
			case <-r.octx.Done():
				return fmt.Errorf("init container %s: %w", c.spec.Name, r.octx.Err())
			}
			if c.code != 0 {
				return fmt.Errorf("init container %s exited with code %d", c.spec.Name, c.code)
			}
		}
	}
	return nil
}

// startContainer starts c's process and runs its postStart hook.
func (r *PodRun) startContainer(c *ctr) error {
	img, ok := r.opts.Images[c.spec.Image]
	if !ok {
		return fmt.Errorf("container %s: image %q is not in PodOptions.Images (ErrImagePull)", c.spec.Name, c.spec.Image)
	}
	kenv, err := r.env(c.spec)
	if err != nil {
		return fmt.Errorf("container %s: CreateContainerConfigError: %w", c.spec.Name, err)
	}
	uid, setpriv, err := r.security(c.spec)
	if err != nil {
		return fmt.Errorf("container %s: CreateContainerConfigError: %w", c.spec.Name, err)
	}
	c.setpriv = setpriv
	c.env = processEnv(r.hostname(), uid, img.Env, kenv)
	argv := commandLine(c.spec, img, kenv)
	if len(argv) == 0 {
		return fmt.Errorf("container %s: no command: neither the container nor its image gives one", c.spec.Name)
	}
	script, err := r.mountScript(c, img)
	if err != nil {
		return fmt.Errorf("container %s: %w", c.spec.Name, err)
	}
	args := append([]string{"netns", "exec", r.net.NS, r.tools.bash, "-c", script, "bash"}, argv...)
	cmd := exec.Command(r.net.ip, args...)
	// The script's own tools get an environment of the emulator's (the container's, BASH_ENV
	// say, is not theirs); it gives the command the container's with env -i.
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	// Its own UTS namespace, for the pod's hostname, and PID namespace, as a container has:
	// the command is its process 1 (which ignores the signals it has no handler for, SIGTERM
	// too), and what it starts dies with it. ip, bash, env and setpriv exec the command, so the
	// process is the container's command itself, and it dies with the test process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Cloneflags: syscall.CLONE_NEWUTS | syscall.CLONE_NEWPID}
	cmd.WaitDelay = 5 * time.Second

	// The script writes to fd 3 once the container's root is made, just before it execs the
	// command: the container is then running, and a hook may enter its namespaces.
	ready, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer ready.Close()
	cmd.ExtraFiles = []*os.File{readyW}
	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		readyW.Close()
		return fmt.Errorf("container %s: the pod is stopping", c.spec.Name)
	}
	// Labelled pod/container, as kubectl logs names them: a test may run pods whose containers
	// share names (two injected sidecars).
	c.proc, err = start(r.t, r.pod.Name+"/"+c.spec.Name, cmd)
	r.mu.Unlock()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("container %s: %w", c.spec.Name, err)
	}
	go func() {
		<-c.proc.Done()
		c.code = exitCode(c.proc.Cmd.ProcessState)
		close(c.exited)
	}()
	if n, _ := ready.Read(make([]byte, 1)); n == 0 {
		<-c.exited
		return fmt.Errorf("container %s: StartError: making its root failed (exit code %d): %s", c.spec.Name, c.code, strings.TrimSpace(c.proc.Output()))
	}
	close(c.up)

	if h := lifecycle(c.spec, func(l *corev1.Lifecycle) *corev1.LifecycleHandler { return l.PostStart }); h != nil {
		if err := r.handle(r.octx, c, h.Exec, h.HTTPGet, h.TCPSocket, h.Sleep, nil, 0); err != nil {
			// As the kubelet does (FailedPostStartHook), the container is killed.
			c.proc.Kill()
			return fmt.Errorf("container %s: postStart hook: %w", c.spec.Name, err)
		}
	}
	return nil
}

// lifecycle returns c's hook that get picks, if it has one.
func lifecycle(c *corev1.Container, get func(*corev1.Lifecycle) *corev1.LifecycleHandler) *corev1.LifecycleHandler {
	if c.Lifecycle == nil {
		return nil
	}
	return get(c.Lifecycle)
}

// exitCode is the code the kubelet reports: 128 plus the signal for a killed process.
func exitCode(s *os.ProcessState) int {
	if ws, ok := s.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return s.ExitCode()
}

// hostname is the pod's, as the kubelet gives it: spec.hostname or its name, at most 63
// characters, with no trailing dash or dot.
func (r *PodRun) hostname() string {
	h := cmp.Or(r.pod.Spec.Hostname, r.pod.Name)
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// WaitStarted waits until every container has started (each postStart hook returned, each
// native sidecar's startup probe passed), and returns why the pod failed if it did.
func (r *PodRun) WaitStarted(ctx context.Context) error {
	select {
	case <-r.started:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait waits for the container named name to exit and returns its exit code (128 plus the
// signal when killed).
func (r *PodRun) Wait(ctx context.Context, name string) (int, error) {
	c, err := r.ctr(ctx, name)
	if err != nil {
		return -1, err
	}
	select {
	case <-c.exited:
		return c.code, nil
	case <-ctx.Done():
		return -1, fmt.Errorf("waiting for container %s to exit: %w", name, ctx.Err())
	}
}

// WaitReady waits until the container named name is ready: its readinessProbe, run as the
// kubelet runs it, succeeded once (a container without one is ready once started).
func (r *PodRun) WaitReady(ctx context.Context, name string) error {
	c, err := r.ctr(ctx, name)
	if err != nil {
		return err
	}
	if p := c.spec.ReadinessProbe; p != nil {
		return r.probe(ctx, c, &p.ProbeHandler, p, false)
	}
	return nil
}

// ctr waits until the container named name has started.
func (r *PodRun) ctr(ctx context.Context, name string) (*ctr, error) {
	c, ok := r.ctrs[name]
	if !ok {
		return nil, fmt.Errorf("pod %s has no container %s", r.pod.Name, name)
	}
	select {
	case <-c.up:
		return c, nil
	case <-r.started:
		if c.running() {
			return c, nil
		}
		return nil, fmt.Errorf("container %s never started: %v", name, r.err)
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for container %s to start: %w", name, ctx.Err())
	}
}

// VolumeDir is the host directory of the pod's volume name, as the kubelet's
// /var/lib/kubelet/pods/<uid>/volumes/...: where a test reads or changes what the pod's
// containers share.
func (r *PodRun) VolumeDir(name string) (string, error) {
	d, ok := r.vols[name]
	if !ok {
		return "", fmt.Errorf("pod %s has no volume %s", r.pod.Name, name)
	}
	return d, nil
}

// Pids are the process ids of the pod's containers that were started.
func (r *PodRun) Pids() []int {
	var pids []int
	for _, c := range r.order {
		if c.running() {
			pids = append(pids, c.proc.Pid())
		}
	}
	return pids
}

// TerminationMessage is what the container named name wrote to its termination message path
// (/dev/termination-log by default), which the kubelet puts in the pod's status.
func (r *PodRun) TerminationMessage(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(r.dir, "termination-log-"+name))
	return string(b), err
}

// Output is what the container named name wrote so far (stdout and stderr, as its log).
func (r *PodRun) Output(name string) string {
	c, ok := r.ctrs[name]
	if !ok || !c.running() {
		return ""
	}
	return c.proc.Output()
}

// Exec runs argv in the running container named name, as `kubectl exec` does: in its
// namespaces, as its user, with its capabilities and environment. It returns the combined
// output.
func (r *PodRun) Exec(ctx context.Context, name string, argv ...string) ([]byte, error) {
	c, err := r.ctr(ctx, name)
	if err != nil {
		return nil, err
	}
	return r.execIn(ctx, c, argv).CombinedOutput()
}

// execIn is the command running argv in c: nsenter into the mount, UTS, network and PID namespaces
// of c's process and its working directory, then setpriv to its credentials.
func (r *PodRun) execIn(ctx context.Context, c *ctr, argv []string) *exec.Cmd {
	args := []string{"-t", strconv.Itoa(c.proc.Pid()), "-m", "-u", "-n", "-p", "-r", "-w", "--", r.tools.setpriv}
	args = append(append(append(args, c.setpriv...), "--"), argv...)
	cmd := exec.CommandContext(ctx, r.tools.nsenter, args...)
	cmd.Env = c.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	return cmd
}

// Stop deletes the pod as the kubelet does: each container's preStop hook, then SIGTERM,
// the app containers at once, then the native sidecars one by one in reverse order, and
// SIGKILL for what still runs when terminationGracePeriodSeconds (bounded by
// PodOptions.MaxGracePeriod) is over; a sidecar gets at least 2s, as the kubelet gives it.
// It returns once every container has exited.
func (r *PodRun) Stop() {
	r.stopOnce.Do(func() {
		r.mu.Lock()
		r.stopping = true
		r.mu.Unlock()
		r.ocancel()
		<-r.started
		grace := 30 * time.Second
		if s := r.pod.Spec.TerminationGracePeriodSeconds; s != nil {
			grace = time.Duration(*s) * time.Second
		}
		grace = min(grace, cmp.Or(r.opts.MaxGracePeriod, 5*time.Second))
		deadline := time.Now().Add(grace)
		var wg sync.WaitGroup
		for _, c := range r.order {
			if !c.native {
				wg.Go(func() { r.terminate(c, deadline) })
			}
		}
		wg.Wait()
		for _, c := range slices.Backward(r.order) {
			if c.native {
				d := deadline
				if least := time.Now().Add(2 * time.Second); d.Before(least) {
					d = least
				}
				r.terminate(c, d)
			}
		}
	})
}

// terminate runs c's preStop hook, sends it SIGTERM, and SIGKILL at deadline.
func (r *PodRun) terminate(c *ctr, deadline time.Time) {
	if !c.running() {
		return
	}
	select {
	case <-c.exited:
		return
	default:
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if h := lifecycle(c.spec, func(l *corev1.Lifecycle) *corev1.LifecycleHandler { return l.PreStop }); h != nil {
		if err := r.handle(ctx, c, h.Exec, h.HTTPGet, h.TCPSocket, h.Sleep, nil, 0); err != nil {
			r.t.Logf("container %s: preStop hook: %v", c.spec.Name, err)
		}
	}
	c.proc.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-ctx.Done():
		c.proc.Kill()
	}
}

// kill stops the start sequence and SIGKILLs every container.
func (r *PodRun) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopping = true
	r.ocancel()
	for _, c := range r.order {
		if c.proc != nil {
			c.proc.Cmd.Process.Signal(syscall.SIGKILL)
		}
	}
}

// probeTick is how often a probe runs at most: a probe's periodSeconds (10 by default) is
// for production, the tests would wait for it. The time a probe is given to succeed is the
// spec's, though.
const probeTick = 100 * time.Millisecond

// probe runs h until it succeeds, every probeTick after p's initialDelaySeconds. With
// bounded (a startup probe) it gives up as the kubelet would, once failureThreshold periods
// have passed; it also gives up when c exits.
func (r *PodRun) probe(ctx context.Context, c *ctr, h *corev1.ProbeHandler, p *corev1.Probe, bounded bool) error {
	period := time.Duration(cmp.Or(p.PeriodSeconds, 10)) * time.Second
	timeout := time.Duration(cmp.Or(p.TimeoutSeconds, 1)) * time.Second
	delay := time.Duration(p.InitialDelaySeconds) * time.Second
	given := delay + period*time.Duration(cmp.Or(p.FailureThreshold, 3))
	deadline := time.Now().Add(given)
	wait := delay
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.exited:
			return fmt.Errorf("container %s exited with code %d", c.spec.Name, c.code)
		case <-time.After(wait):
		}
		err := r.handle(ctx, c, h.Exec, h.HTTPGet, h.TCPSocket, nil, h.GRPC, timeout)
		if err == nil {
			return nil
		}
		if bounded && time.Now().After(deadline) {
			return fmt.Errorf("still failing after %v: %w", given, err)
		}
		wait = min(period, probeTick)
	}
}

// handle runs the one action a probe or hook has, as the kubelet does: exec in the
// container, httpGet and tcpSocket from the node (to the pod's address unless a host is
// given), within timeout when it is not 0.
func (r *PodRun) handle(ctx context.Context, c *ctr, ex *corev1.ExecAction, get *corev1.HTTPGetAction,
	tcp *corev1.TCPSocketAction, sleep *corev1.SleepAction, grpc *corev1.GRPCAction, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	switch {
	case ex != nil:
		out, err := r.execIn(ctx, c, ex.Command).CombinedOutput()
		if err != nil {
			return fmt.Errorf("exec %q: %v: %s", ex.Command, err, strings.TrimSpace(string(out)))
		}
		return nil
	case get != nil:
		port, err := containerPort(c.spec, get.Port)
		if err != nil {
			return err
		}
		scheme := strings.ToLower(string(cmp.Or(get.Scheme, corev1.URISchemeHTTP)))
		u := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(cmp.Or(get.Host, r.net.Addr.String()), strconv.Itoa(port)), "/"+strings.TrimPrefix(get.Path, "/"))
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "kube-probe/1.37")
		req.Header.Set("Accept", "*/*")
		for _, h := range get.HTTPHeaders {
			if strings.EqualFold(h.Name, "Host") {
				req.Host = h.Value
			} else {
				req.Header.Set(h.Name, h.Value)
			}
		}
		client := &http.Client{Transport: &http.Transport{
			DialContext:       r.net.nodeDial,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // as the kubelet's prober
			DisableKeepAlives: true,
		}}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("GET %s: %s", u, resp.Status)
		}
		return nil
	case tcp != nil:
		port, err := containerPort(c.spec, tcp.Port)
		if err != nil {
			return err
		}
		conn, err := r.net.nodeDial(ctx, "tcp", net.JoinHostPort(cmp.Or(tcp.Host, r.net.Addr.String()), strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case sleep != nil:
		select {
		case <-time.After(time.Duration(sleep.Seconds) * time.Second):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	case grpc != nil:
		return errors.New("grpc probes are not emulated")
	}
	return errors.New("a probe or hook with no action")
}

// nodeDial dials addr from the node's namespace, where the kubelet's probes come from.
func (p *Pod) nodeDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := InNetns(p.node, func() (err error) {
		c, err = new(net.Dialer).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// containerPort resolves a probe's port, a number or the name of one of c's ports.
func containerPort(c *corev1.Container, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, p.StrVal)
}

// commandLine is c's command line, from its command and args (with $(VAR) expanded from
// env, as the kubelet does) and its image's entrypoint and cmd, by Docker's rules: a
// command replaces the entrypoint and drops the cmd; args alone replace the cmd.
func commandLine(c *corev1.Container, img Image, env map[string]string) []string {
	expand := func(s []string) []string {
		out := make([]string, len(s))
		for i, a := range s {
			out[i] = Expand(a, MappingFor(env))
		}
		return out
	}
	switch {
	case len(c.Command) > 0:
		return append(expand(c.Command), expand(c.Args)...)
	case len(c.Args) > 0:
		return append(slices.Clone(img.Entrypoint), expand(c.Args)...)
	}
	return append(slices.Clone(img.Entrypoint), img.Cmd...)
}

// defaultPath is the PATH a container gets when its image sets none, as Docker's.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// processEnv is a container process's environment, as the runtime builds it: HOSTNAME, the
// image's variables, then the kubelet's (which win), and HOME when none of them sets it (as
// runc does: the user's home in the image's /etc/passwd, here the host's, or /), sorted for
// a stable order.
func processEnv(hostname string, uid int64, image []string, kubelet map[string]string) []string {
	m := map[string]string{"PATH": defaultPath, "HOSTNAME": hostname}
	for _, kv := range image {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	maps.Copy(m, kubelet)
	if _, ok := m["HOME"]; !ok {
		m["HOME"] = "/"
		if u, err := user.LookupId(strconv.FormatInt(uid, 10)); err == nil && u.HomeDir != "" {
			m["HOME"] = u.HomeDir
		}
	}
	env := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		env = append(env, k+"="+m[k])
	}
	return env
}

// env is the kubelet's environment for c (makeEnvironmentVariables): its envFrom sources,
// then its env in order, each value's $(VAR) expanded from the variables defined before it
// and the service variables; then the service variables it does not define.
func (r *PodRun) env(c *corev1.Container) (map[string]string, error) {
	tmp := map[string]string{}
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, ok := r.opts.ConfigMaps[from.ConfigMapRef.Name]
			if !ok {
				if optional(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("configmap %q not found", from.ConfigMapRef.Name)
			}
			data = cm
		case from.SecretRef != nil:
			s, ok := r.opts.Secrets[from.SecretRef.Name]
			if !ok {
				if optional(from.SecretRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("secret %q not found", from.SecretRef.Name)
			}
			data = map[string]string{}
			for k, v := range s {
				data[k] = string(v)
			}
		}
		for k, v := range data {
			tmp[from.Prefix+k] = v
		}
	}
	svc := r.opts.ServiceEnv
	if l := r.pod.Spec.EnableServiceLinks; l != nil && !*l {
		// Without service links the kubelet still gives the API server's service.
		svc = maps.Collect(func(yield func(string, string) bool) {
			for k, v := range r.opts.ServiceEnv {
				if strings.HasPrefix(k, "KUBERNETES_") && !yield(k, v) {
					return
				}
			}
		})
	}
	mapping := MappingFor(tmp, svc)
	for _, e := range c.Env {
		val := e.Value
		if val != "" {
			val = Expand(val, mapping)
		} else if from := e.ValueFrom; from != nil {
			var err error
			var found bool
			switch {
			case from.FieldRef != nil:
				val, err = r.field(from.FieldRef.FieldPath)
				found = true
			case from.ResourceFieldRef != nil:
				val, err = r.resourceField(from.ResourceFieldRef, c)
				found = true
			case from.ConfigMapKeyRef != nil:
				ref := from.ConfigMapKeyRef
				val, found = r.opts.ConfigMaps[ref.Name][ref.Key]
				if !found && !optional(ref.Optional) {
					err = fmt.Errorf("couldn't find key %s in ConfigMap %s", ref.Key, ref.Name)
				}
			case from.SecretKeyRef != nil:
				ref := from.SecretKeyRef
				var b []byte
				b, found = r.opts.Secrets[ref.Name][ref.Key]
				val = string(b)
				if !found && !optional(ref.Optional) {
					err = fmt.Errorf("couldn't find key %s in Secret %s", ref.Key, ref.Name)
				}
			default:
				err = fmt.Errorf("env %s: a valueFrom source the emulator does not know", e.Name)
			}
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			if !found {
				continue
			}
		}
		tmp[e.Name] = val
	}
	env := map[string]string{}
	maps.Copy(env, svc)
	maps.Copy(env, tmp)
	return env, nil
}

func optional(b *bool) bool { return b != nil && *b }

// field is a pod field's value, as the kubelet gives it to a variable or a downward-API file
// (podFieldSelectorRuntimeValue, fieldpath.ExtractFieldPathAsString).
func (r *PodRun) field(fieldPath string) (string, error) {
	r.meta.Lock()
	defer r.meta.Unlock()
	m := &r.pod.ObjectMeta
	if p, key, ok := strings.Cut(fieldPath, "['"); ok && strings.HasSuffix(key, "']") && p != "" {
		key = strings.TrimSuffix(key, "']")
		switch p {
		case "metadata.annotations":
			return m.Annotations[key], nil
		case "metadata.labels":
			return m.Labels[key], nil
		}
		return "", fmt.Errorf("fieldPath %q does not support subscript", fieldPath)
	}
	switch fieldPath {
	case "metadata.annotations":
		return FormatMap(m.Annotations), nil
	case "metadata.labels":
		return FormatMap(m.Labels), nil
	case "metadata.name":
		return m.Name, nil
	case "metadata.namespace":
		return m.Namespace, nil
	case "metadata.uid":
		return string(m.UID), nil
	case "spec.nodeName":
		return r.pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return r.pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return podSubnet + "1", nil // the node's address on the pod network
	case "status.podIP", "status.podIPs":
		return r.net.Addr.String(), nil
	}
	return "", fmt.Errorf("unsupported fieldPath: %v", fieldPath)
}

// resourceField is a container's resource as a resourceFieldRef gives it: in units of its
// divisor (default 1), rounded up; a limit the container does not set is the node's
// allocatable.
func (r *PodRun) resourceField(f *corev1.ResourceFieldSelector, c *corev1.Container) (string, error) {
	if f.ContainerName != "" {
		rc, ok := r.ctrs[f.ContainerName]
		if !ok {
			return "", fmt.Errorf("no container %s", f.ContainerName)
		}
		c = rc.spec
	}
	if c == nil {
		return "", fmt.Errorf("resourceFieldRef %s names no container", f.Resource)
	}
	kind, name, _ := strings.Cut(f.Resource, ".")
	q, ok := c.Resources.Requests[corev1.ResourceName(name)]
	if kind == "limits" {
		if q, ok = c.Resources.Limits[corev1.ResourceName(name)]; !ok {
			q, ok = r.opts.Allocatable[corev1.ResourceName(name)]
		}
	}
	if kind != "limits" && kind != "requests" {
		return "", fmt.Errorf("unsupported container resource: %v", f.Resource)
	}
	if !ok {
		q = resource.Quantity{}
	}
	divisor := f.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if name == string(corev1.ResourceCPU) {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

// FormatMap writes labels or annotations as the kubelet writes them into a downward-API file
// (fieldpath.FormatMap): key="value" lines sorted by key, each value quoted as Go quotes it
// (strconv.Quote), with no newline after the last.
func FormatMap(m map[string]string) string {
	var b []byte
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if len(b) > 0 {
			b = append(b, '\n')
		}
		b = append(b, k...)
		b = append(b, '=')
		b = strconv.AppendQuote(b, m[k])
	}
	return string(b)
}

// MappingFor looks a $(VAR) reference up in the first of maps that has it, leaving it as
// written when none has (expansion.MappingFuncFor).
func MappingFor(maps ...map[string]string) func(string) string {
	return func(name string) string {
		for _, m := range maps {
			if v, ok := m[name]; ok {
				return v
			}
		}
		return "$(" + name + ")"
	}
}

// Expand expands the $(VAR) references of s through mapping as the kubelet expands a
// container's env values, command and args (Kubernetes' third_party/forked/golang/expansion):
// $$ is a $, a $ not followed by ( or $ stays, and an unclosed $( stays as written.
func Expand(s string, mapping func(string) string) string {
	var b strings.Builder
	checkpoint := 0
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			continue
		}
		b.WriteString(s[checkpoint:i])
		read, isVar, advance := readVariable(s[i+1:])
		if isVar {
			b.WriteString(mapping(read))
		} else {
			b.WriteString(read)
		}
		i += advance
		checkpoint = i + 1
	}
	return b.String() + s[checkpoint:]
}

// readVariable reads what follows a $: a name in parentheses (isVar), or what the $ and the
// rune after it stand for; advance is how many bytes after the $ it took.
func readVariable(s string) (read string, isVar bool, advance int) {
	switch s[0] {
	case '$':
		return "$", false, 1
	case '(':
		if i := strings.IndexByte(s[1:], ')'); i >= 0 {
			return s[1 : i+1], true, i + 2
		}
		return "$(", false, 1
	}
	r, size := utf8.DecodeRuneInString(s)
	return "$" + string(r), false, size
}

// defaultCaps are the capabilities containerd gives a container (oci.DefaultSpec) before its
// securityContext's add and drop.
var defaultCaps = []string{"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
	"SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}

// security is setpriv's options for c's securityContext over the pod's (the container's
// fields win): its uid and gid (0 when unset, an image's user being root here), the pod's
// supplemental groups and fsGroup, its capabilities as the bounding set (a root process gets
// them as its permitted and effective sets when it execs, a non-root one none, as under
// containerd; the inheritable and ambient sets are empty), and no_new_privs when
// allowPrivilegeEscalation is false. runAsNonRoot with uid 0 fails, as the kubelet refuses
// to start such a container.
func (r *PodRun) security(c *corev1.Container) (uid int64, setpriv []string, err error) {
	psc := cmp.Or(r.pod.Spec.SecurityContext, &corev1.PodSecurityContext{})
	sc := cmp.Or(c.SecurityContext, &corev1.SecurityContext{})
	var gid int64
	if p := cmp.Or(sc.RunAsUser, psc.RunAsUser); p != nil {
		uid = *p
	}
	if p := cmp.Or(sc.RunAsGroup, psc.RunAsGroup); p != nil {
		gid = *p
	}
	if nr := cmp.Or(sc.RunAsNonRoot, psc.RunAsNonRoot); nr != nil && *nr && uid == 0 {
		return 0, nil, errors.New("container has runAsNonRoot and image will run as root")
	}
	args := []string{fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", gid)}
	groups := slices.Clone(psc.SupplementalGroups)
	if psc.FSGroup != nil {
		groups = append(groups, *psc.FSGroup)
	}
	if len(groups) > 0 {
		g := make([]string, len(groups))
		for i, n := range groups {
			g[i] = strconv.FormatInt(n, 10)
		}
		args = append(args, "--groups="+strings.Join(g, ","))
	} else {
		args = append(args, "--clear-groups")
	}
	privileged := sc.Privileged != nil && *sc.Privileged
	if b := boundingSet(sc.Capabilities, privileged); b != "" {
		args = append(args, "--bounding-set="+b)
	}
	args = append(args, "--inh-caps=-all", "--ambient-caps=-all")
	if ape := sc.AllowPrivilegeEscalation; ape != nil && !*ape && !privileged {
		args = append(args, "--no-new-privs")
	}
	// The parent-death signal is cleared when the uid changes, so setpriv sets it again.
	return uid, append(args, "--pdeathsig=KILL"), nil
}

// boundingSet is setpriv's --bounding-set for caps over the default set, applied as
// containerd applies them: add ALL, drop ALL, then each added, then each dropped; "" keeps
// every capability.
func boundingSet(caps *corev1.Capabilities, privileged bool) string {
	all := privileged
	set := map[string]bool{} // with all, the dropped capabilities; otherwise the kept ones
	if !all {
		for _, c := range defaultCaps {
			set[c] = true
		}
	}
	if caps != nil && !privileged {
		has := func(l []corev1.Capability) bool { return slices.Contains(l, "ALL") }
		if has(caps.Add) {
			all, set = true, map[string]bool{}
		}
		if has(caps.Drop) {
			all, set = false, map[string]bool{}
		}
		name := func(c corev1.Capability) string { return strings.TrimPrefix(strings.ToUpper(string(c)), "CAP_") }
		for _, c := range caps.Add {
			if c != "ALL" {
				if all {
					delete(set, name(c))
				} else {
					set[name(c)] = true
				}
			}
		}
		for _, c := range caps.Drop {
			if c != "ALL" {
				if all {
					set[name(c)] = true
				} else {
					delete(set, name(c))
				}
			}
		}
	}
	var b []string
	sign := "-" // all but the capabilities in set
	if !all {
		b, sign = append(b, "-all"), "+"
	}
	for _, c := range slices.Sorted(maps.Keys(set)) {
		b = append(b, sign+strings.ToLower(c))
	}
	return strings.Join(b, ",")
}

// kernelDirs are the top-level directories a container's root does not take from the host's
// filesystem, but makes as runc does: /proc is a procfs of the container's PID namespace,
// /dev a tmpfs with the usual devices bound from the host, its own devpts and /dev/shm, and
// /sys the netns's, bound read-only (read-write when privileged); any other directory is an
// overlay.
var kernelDirs = []string{"/dev", "/proc", "/sys"}

// devices are the host devices a container's /dev has, as runc's default devices.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// mountScript is the bash script that makes c's root in the mount namespace `ip netns exec`
// gives it, then execs setpriv with c's credentials and environment and the command line
// ("$@"). It sets the pod's hostname; makes a root of its own, a tmpfs holding the host's
// top-level entries, each directory an overlay with its upper layer on a tmpfs (the
// container's writable layer: what it writes stays out of the host's filesystem) but the
// kernelDirs, bound; binds the files `ip netns exec` bound over /etc (the netns's hosts
// file, with the pod's own name added), the image's files (read-only) and c's volume mounts (API data volumes always
// read-only, as the kubelet mounts them) into it, making missing mount points in the
// overlays; and pivots into it. readOnlyRootFilesystem remounts the root and its overlays
// read-only.
func (r *PodRun) mountScript(c *ctr, img Image) (string, error) {
	type mnt struct {
		src, dst string
		ro       bool
	}
	var mounts []mnt
	netnsEtc := filepath.Join("/etc/netns", r.net.NS)
	etc, err := os.ReadDir(netnsEtc)
	if err != nil {
		return "", err
	}
	for _, e := range etc {
		src := filepath.Join(netnsEtc, e.Name())
		if e.Name() == "hosts" {
			// The netns's names, and the pod's own, as the kubelet's hosts file has it.
			hosts, err := os.ReadFile(src)
			if err != nil {
				return "", err
			}
			src = filepath.Join(r.dir, "hosts-"+c.spec.Name)
			hosts = fmt.Appendf(hosts, "%s\t%s\n", r.net.Addr, r.hostname())
			if err := os.WriteFile(src, hosts, 0o644); err != nil {
				return "", err
			}
		}
		mounts = append(mounts, mnt{src, "/etc/" + e.Name(), false})
	}
	for _, dst := range slices.Sorted(maps.Keys(img.Files)) {
		mounts = append(mounts, mnt{img.Files[dst], dst, true})
	}
	// The kubelet binds a file of its own at the termination message's path.
	termLog := filepath.Join(r.dir, "termination-log-"+c.spec.Name)
	if err := os.WriteFile(termLog, nil, 0o666); err != nil {
		return "", err
	}
	mounts = append(mounts, mnt{termLog, cmp.Or(c.spec.TerminationMessagePath, corev1.TerminationMessagePathDefault), false})
	for _, vm := range c.spec.VolumeMounts {
		dir, ok := r.vols[vm.Name]
		if !ok {
			return "", fmt.Errorf("volume mount %s: the pod has no such volume", vm.Name)
		}
		if vm.SubPathExpr != "" {
			return "", fmt.Errorf("volume mount %s: subPathExpr is not emulated", vm.Name)
		}
		src := dir
		if vm.SubPath != "" {
			src = filepath.Join(dir, vm.SubPath)
			if err := os.MkdirAll(src, 0o755); err != nil {
				return "", err
			}
		}
		mounts = append(mounts, mnt{src, vm.MountPath, vm.ReadOnly || r.api[vm.Name]})
	}
	top, err := os.ReadDir("/")
	if err != nil {
		return "", err
	}

	q := shellQuote
	t := r.tools
	var s strings.Builder
	s.WriteString("set -e\n")
	fmt.Fprintf(&s, "printf %%s %s >/proc/sys/kernel/hostname\n", q(r.hostname()))
	scratch := filepath.Join(r.dir, "scratch", c.spec.Name)
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return "", err
	}
	root, upper := scratch+"/root", scratch+"/upper"
	fmt.Fprintf(&s, "%s -t tmpfs -o mode=0700 tmpfs %s\n", t.mount, q(scratch))
	fmt.Fprintf(&s, "%s %s %s\n", t.mkdir, q(root), q(upper))
	fmt.Fprintf(&s, "%s -t tmpfs -o mode=0755 tmpfs %s\n", t.mount, q(root))
	fmt.Fprintf(&s, "%s -t tmpfs -o mode=0700 tmpfs %s\n", t.mount, q(upper))
	var overlays []string
	for _, e := range top {
		src := "/" + e.Name()
		dst := q(root + src)
		fi, err := os.Lstat(src)
		if err != nil {
			return "", err
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(src)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&s, "%s -s %s %s\n", t.ln, q(target), dst)
		case src == "/proc":
			fmt.Fprintf(&s, "%s %s\n%s -t proc proc %[2]s\n", t.mkdir, dst, t.mount)
		case src == "/dev":
			d := root + src
			fmt.Fprintf(&s, "%s %s\n%s -t tmpfs -o mode=0755,nosuid tmpfs %[2]s\n", t.mkdir, q(d), t.mount)
			for _, dev := range devices {
				fmt.Fprintf(&s, ": >%[1]s\n%[2]s --bind %[3]s %[1]s\n", q(d+"/"+dev), t.mount, q("/dev/"+dev))
			}
			fmt.Fprintf(&s, "%s %s %s\n", t.mkdir, q(d+"/pts"), q(d+"/shm"))
			fmt.Fprintf(&s, "%s -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts %s\n", t.mount, q(d+"/pts"))
			fmt.Fprintf(&s, "%s -t tmpfs -o mode=1777,nosuid,nodev shm %s\n", t.mount, q(d+"/shm"))
			for link, target := range map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
				"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
				fmt.Fprintf(&s, "%s -s %s %s\n", t.ln, q(target), q(d+"/"+link))
			}
		case src == "/sys":
			fmt.Fprintf(&s, "%s %s\n%s --rbind %s %[2]s\n", t.mkdir, dst, t.mount, q(src))
			if sc := c.spec.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
				fmt.Fprintf(&s, "%s -o remount,bind,ro %s\n", t.mount, dst)
			}
		case fi.IsDir():
			if strings.ContainsAny(src, ",:") {
				return "", fmt.Errorf("the host's %s cannot be an overlay's lower directory", src)
			}
			o := fmt.Sprintf("%s/%d", upper, len(overlays))
			fmt.Fprintf(&s, "%s -p %s %s/upper %[3]s/work\n", t.mkdir, dst, q(o))
			fmt.Fprintf(&s, "%s -t overlay overlay -o %s %s\n", t.mount,
				q(fmt.Sprintf("lowerdir=%s,upperdir=%s/upper,workdir=%[2]s/work", src, o)), dst)
			overlays = append(overlays, root+src)
		default: // a file: the container may read it, not change the host's
			fmt.Fprintf(&s, ": >%[1]s\n%[2]s --bind -o ro %[3]s %[1]s\n", dst, t.mount, q(src))
		}
	}
	for _, m := range mounts {
		if !path.IsAbs(m.dst) {
			return "", fmt.Errorf("mount path %q is not absolute", m.dst)
		}
		fi, err := os.Stat(m.src)
		if err != nil {
			return "", err
		}
		real, err := realPath(path.Clean(m.dst))
		if err != nil {
			return "", err
		}
		dst := q(root + real)
		if _, err := os.Stat(real); err != nil && (strings.HasPrefix(real, "/proc/") || strings.HasPrefix(real, "/sys/")) {
			return "", fmt.Errorf("mount path %s: the emulator makes no mount point in %s", m.dst, path.Dir(real))
		}
		if fi.IsDir() {
			fmt.Fprintf(&s, "[ -e %[2]s ] || %[1]s -p %[2]s\n", t.mkdir, dst)
		} else {
			fmt.Fprintf(&s, "[ -e %[2]s ] || { %[1]s -p %[3]s; : >%[2]s; }\n", t.mkdir, dst, q(path.Dir(root+real)))
		}
		fmt.Fprintf(&s, "%s --bind %s %s\n", t.mount, q(m.src), dst)
		if m.ro {
			fmt.Fprintf(&s, "%s -o remount,bind,ro %s\n", t.mount, dst)
		}
	}
	// The runtime makes a missing working directory.
	wd := cmp.Or(c.spec.WorkingDir, img.WorkingDir, "/")
	if !path.IsAbs(wd) {
		return "", fmt.Errorf("working directory %q is not absolute", wd)
	}
	realWD, err := realPath(path.Clean(wd))
	if err != nil {
		return "", err
	}
	fmt.Fprintf(&s, "[ -d %[2]s ] || %[1]s -p %[2]s\n", t.mkdir, q(root+realWD))
	if sc := c.spec.SecurityContext; sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		for _, d := range append([]string{root}, overlays...) {
			fmt.Fprintf(&s, "%s -o remount,bind,ro %s\n", t.mount, q(d))
		}
	}
	// As runc does: the old root, stacked on the new one by pivot_root(".", "."), is detached.
	fmt.Fprintf(&s, "cd %s\n%s . .\n%s -l .\n", q(root), t.pivotRoot, t.umount)
	fmt.Fprintf(&s, "cd %s\n", q(wd))
	s.WriteString("printf x >&3\nexec 3>&-\n")
	// env -i: the process gets the container's environment, none of bash's variables.
	fmt.Fprintf(&s, "exec %s -i -- %s %s %s -- \"$@\"\n", t.env, strings.Join(slicesMap(c.env, q), " "),
		t.setpriv, strings.Join(slicesMap(c.setpriv, q), " "))
	return s.String(), nil
}

func slicesMap(s []string, f func(string) string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = f(v)
	}
	return out
}

// realPath resolves the symbolic links of p's deepest existing ancestor (or p itself), as
// the container's root, made of the host's, would resolve them.
func realPath(p string) (string, error) {
	rest := ""
	for a := p; ; a = path.Dir(a) {
		if _, err := os.Stat(a); err == nil {
			e, err := filepath.EvalSymlinks(a)
			if err != nil {
				return "", err
			}
			return path.Join(e, rest), nil
		}
		rest = path.Join(path.Base(a), rest)
	}
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// file is one file of an API data volume.
type file struct {
	data []byte
	mode os.FileMode
}

// volume makes the volume v's directory in the pod's directory, and writes its files when it
// holds API data.
func (r *PodRun) volume(v corev1.Volume) error {
	dir := filepath.Join(r.dir, "volumes", v.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// As an emptyDir's, on which the kubelet makes its API data volumes too.
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	r.vols[v.Name] = dir
	if v.EmptyDir != nil {
		return nil
	}
	files, err := r.apiFiles(v)
	if err != nil {
		return err
	}
	r.api[v.Name] = true
	return writeAtomic(dir, files)
}

// SetAnnotations changes the pod's annotations, as an update through the API server would,
// and rewrites its downward-API files as the kubelet does when it syncs the pod: atomically,
// through ..data. The containers' variables keep the values they started with.
func (r *PodRun) SetAnnotations(annotations map[string]string) error {
	r.update.Lock()
	defer r.update.Unlock()
	r.meta.Lock()
	r.pod.Annotations = maps.Clone(annotations)
	r.meta.Unlock()
	for _, v := range r.pod.Spec.Volumes {
		downward := v.DownwardAPI != nil
		if p := v.Projected; p != nil {
			downward = slices.ContainsFunc(p.Sources, func(s corev1.VolumeProjection) bool { return s.DownwardAPI != nil })
		}
		if !downward {
			continue
		}
		files, err := r.apiFiles(v)
		if err == nil {
			err = writeAtomic(r.vols[v.Name], files)
		}
		if err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
	}
	return nil
}

// apiFiles are the files of v, a volume of API data.
func (r *PodRun) apiFiles(v corev1.Volume) (map[string]file, error) {
	files := map[string]file{}
	var err error
	switch {
	case v.DownwardAPI != nil:
		err = r.downwardFiles(files, v.DownwardAPI.Items, fileMode(v.DownwardAPI.DefaultMode, 0o644))
	case v.ConfigMap != nil:
		cm := v.ConfigMap
		err = keyFiles(files, "configmap", cm.Name, r.opts.ConfigMaps, cm.Items, optional(cm.Optional), fileMode(cm.DefaultMode, 0o644))
	case v.Secret != nil:
		sv := v.Secret
		err = keyFiles(files, "secret", sv.SecretName, r.opts.Secrets, sv.Items, optional(sv.Optional), fileMode(sv.DefaultMode, 0o644))
	case v.Projected != nil:
		mode := fileMode(v.Projected.DefaultMode, 0o644)
		for _, src := range v.Projected.Sources {
			switch {
			case src.DownwardAPI != nil:
				err = r.downwardFiles(files, src.DownwardAPI.Items, mode)
			case src.ConfigMap != nil:
				cm := src.ConfigMap
				err = keyFiles(files, "configmap", cm.Name, r.opts.ConfigMaps, cm.Items, optional(cm.Optional), mode)
			case src.Secret != nil:
				sv := src.Secret
				err = keyFiles(files, "secret", sv.Name, r.opts.Secrets, sv.Items, optional(sv.Optional), mode)
			case src.ServiceAccountToken != nil:
				if r.opts.ServiceAccountToken == "" {
					err = errors.New("a serviceAccountToken source needs PodOptions.ServiceAccountToken")
				}
				files[src.ServiceAccountToken.Path] = file{[]byte(r.opts.ServiceAccountToken), mode}
			default:
				err = errors.New("a projected source the emulator does not know")
			}
			if err != nil {
				break
			}
		}
	default:
		return nil, errors.New("a volume type the emulator does not know")
	}
	return files, err
}

// fileMode is m, a mode of the spec's, or def when it is unset.
func fileMode(m *int32, def os.FileMode) os.FileMode {
	if m != nil {
		return os.FileMode(*m)
	}
	return def
}

// downwardFiles adds a downward-API source's files.
func (r *PodRun) downwardFiles(files map[string]file, items []corev1.DownwardAPIVolumeFile, mode os.FileMode) error {
	for _, it := range items {
		var val string
		var err error
		switch {
		case it.FieldRef != nil:
			val, err = r.field(it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			val, err = r.resourceField(it.ResourceFieldRef, nil)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", it.Path, err)
		}
		files[it.Path] = file{[]byte(val), fileMode(it.Mode, mode)}
	}
	return nil
}

// keyFiles adds a configMap's or secret's files: every key, or the items.
func keyFiles[V string | []byte](files map[string]file, kind, name string, objects map[string]map[string]V,
	items []corev1.KeyToPath, optional bool, mode os.FileMode) error {
	data, ok := objects[name]
	if !ok {
		if optional {
			return nil
		}
		return fmt.Errorf("%s %q not found (give it in PodOptions)", kind, name)
	}
	if len(items) == 0 {
		for k, v := range data {
			files[k] = file{[]byte(v), mode}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return fmt.Errorf("%s %q has no key %q", kind, name, it.Key)
		}
		files[it.Path] = file{[]byte(v), fileMode(it.Mode, mode)}
	}
	return nil
}

// writeAtomic lays files out as the kubelet's atomic writer does, so a reader watching them
// sees what it would see in a pod: the files in a timestamped directory, the symbolic link
// ..data to it, and a link ..data/<name> for each top-level name. Writing again makes a new
// directory, renames a new ..data over the old one (the files change at once), then removes
// the old directory and the links to names that are gone.
func writeAtomic(dir string, files map[string]file) error {
	old, _ := os.Readlink(filepath.Join(dir, "..data")) // "" the first time
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return err
	}
	tops := map[string]bool{}
	for p, f := range files {
		full := filepath.Join(ts, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(full, f.mode); err != nil {
			return err
		}
		top, _, _ := strings.Cut(filepath.ToSlash(p), "/")
		tops[top] = true
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	for top := range tops {
		link := filepath.Join(dir, top)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", top), link); err != nil {
			return err
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "..") && !tops[e.Name()] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if old == "" {
		return nil
	}
	return os.RemoveAll(filepath.Join(dir, old))
}
