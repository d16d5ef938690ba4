package testenv_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

// debian is the image the test pods run: the host's own root, /bin/sh and coreutils.
var debian = map[string]testenv.Image{"debian": {}}

// shC is a container running script with /bin/sh.
func shC(name, script string) corev1.Container {
	return corev1.Container{Name: name, Image: "debian", Command: []string{"/bin/sh", "-c", script}}
}

// newPod is a pod named name with containers, as the API server would store it.
func newPod(name string, init []corev1.Container, containers ...corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: "0c4f3a1e-5d6b-4e8f-9a7b-2c1d0e9f8a7b"},
		Spec:       corev1.PodSpec{InitContainers: init, Containers: containers},
	}
}

// shared is an emptyDir volume named shared, mounted at /shared in every container of pod.
func shared(pod *corev1.Pod) *corev1.Pod {
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "shared", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			cs[i].VolumeMounts = append(cs[i].VolumeMounts, corev1.VolumeMount{Name: "shared", MountPath: "/shared"})
		}
	}
	return pod
}

// kubeletCtx bounds a kubelet test.
func kubeletCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// runPod runs pod in a pod network of its own.
func runPod(t *testing.T, pod *corev1.Pod, opts testenv.PodOptions) (*testenv.PodRun, *testenv.Pod) {
	t.Helper()
	p := testenv.NewPodNet(t, "kpod").Pod("kpod")
	if opts.Images == nil {
		opts.Images = debian
	}
	return testenv.RunPod(t, kubeletCtx(t), p, pod, opts), p
}

// exited waits for the container name to exit and returns its output, failing the test
// when it does not exit with want.
func exited(t *testing.T, r *testenv.PodRun, name string, want int) string {
	t.Helper()
	code, err := r.Wait(kubeletCtx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	out := r.Output(name)
	if code != want {
		t.Fatalf("container %s exited with %d, want %d; output:\n%s", name, code, want, out)
	}
	return out
}

// TestKubeletDownwardAPI checks the downward-API volume's files byte for byte against what
// the kubelet writes (key="value" lines sorted by key, values quoted as Go quotes them, no
// newline after the last), in the kubelet's layout (files linked through ..data to a
// timestamped directory), mounted read-only where the pod says, and that nothing of it
// reaches the host's /run.
func TestKubeletDownwardAPI(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        string
	}{
		{"none", nil, ""},
		{"sorted", map[string]string{"restate-grpc.io/inject": "true", "a": "1", "restate-grpc.io/interception": "iptables"},
			`a="1"` + "\n" + `restate-grpc.io/inject="true"` + "\n" + `restate-grpc.io/interception="iptables"`},
		{"quotes and backslashes", map[string]string{"q": `say "hi" \ back`}, `q="say \"hi\" \\ back"`},
		{"newlines and tabs", map[string]string{"multi": "line one\nline two\ttab\r"}, `multi="line one\nline two\ttab\r"`},
		{"unicode", map[string]string{"u": "ünïcødé ☃ 日本", "invisible": "\u00a0\u200b\x7f"},
			`invisible="\u00a0\u200b\x7f"` + "\n" + `u="ünïcødé ☃ 日本"`},
		{"empty value", map[string]string{"empty": ""}, `empty=""`},
		{"json", map[string]string{"restate-grpc.io/routes": `[{"service":"orders.v1.Orders","key":"metadata:x-key"}]`},
			`restate-grpc.io/routes="[{\"service\":\"orders.v1.Orders\",\"key\":\"metadata:x-key\"}]"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := shared(newPod("downward", nil, shC("app", `
				cd /var/run/restate-grpc/podinfo
				cp annotations labels name namespace uid /shared/
				readlink annotations ..data | tr '\n' ' '; echo
				stat -c '%a' ..data/annotations
				if (echo x >annotations) 2>/dev/null; then echo writable; else echo read-only; fi`)))
			pod.Annotations = tc.annotations
			pod.Labels = map[string]string{"app": "shop", "tier": "web"}
			var items []corev1.DownwardAPIVolumeFile
			for _, f := range []string{"annotations", "labels", "name", "namespace", "uid"} {
				items = append(items, corev1.DownwardAPIVolumeFile{Path: f, FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata." + f}})
			}
			pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "podinfo", VolumeSource: corev1.VolumeSource{
				DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: items}}})
			pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts,
				corev1.VolumeMount{Name: "podinfo", MountPath: "/var/run/restate-grpc/podinfo", ReadOnly: true})
			r, _ := runPod(t, pod, testenv.PodOptions{})
			out := exited(t, r, "app", 0)

			if got := testenv.FormatMap(tc.annotations); got != tc.want {
				t.Errorf("FormatMap = %q, want %q", got, tc.want)
			}
			dir := volumeDir(t, r)
			for f, want := range map[string]string{"annotations": tc.want, "labels": "app=\"shop\"\ntier=\"web\"",
				"name": "downward", "namespace": "shop", "uid": "0c4f3a1e-5d6b-4e8f-9a7b-2c1d0e9f8a7b"} {
				if got, err := os.ReadFile(dir + "/" + f); err != nil || string(got) != want {
					t.Errorf("%s holds %q (%v), want %q", f, got, err, want)
				}
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 3 || !strings.HasPrefix(lines[0], "..data/annotations ..20") || lines[1] != "644" || lines[2] != "read-only" {
				t.Errorf("links, mode, writability:\n%s\nwant ..data/annotations and a timestamped directory, 644, read-only", out)
			}
			if _, err := os.Lstat("/run/restate-grpc"); !os.IsNotExist(err) {
				t.Errorf("the host's /run/restate-grpc: %v, want it missing", err)
			}
		})
	}
}

// TestKubeletExpand checks $(VAR) expansion against Kubernetes' own expansion tests.
func TestKubeletExpand(t *testing.T) {
	vars := map[string]string{"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": ""}
	for _, tc := range []struct{ in, want string }{
		{"$(VAR_A)", "A"},
		{"___$(VAR_B)___", "___B___"},
		{"$(VAR_A)-$(VAR_A)", "A-A"},
		{"$(VAR_A)-1", "A-1"},
		{"$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"},
		{"$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"},
		{"$$(VAR_A)_$$(VAR_B)", "$(VAR_A)_$(VAR_B)"},
		{"f000-$$VAR_A", "f000-$VAR_A"},
		{"foo\\$(VAR_C)bar", "foo\\Cbar"},
		{"foo\\\\$(VAR_C)bar", "foo\\\\Cbar"},
		{"$(VAR_A)$(VAR_B)$(VAR_C)", "ABC"},
		{"$(VAR_EMPTY)", ""},
		{"$(VAR_REF)", "$(VAR_A)"}, // not expanded twice
		{"$(UNKNOWN)", "$(UNKNOWN)"},
		{"$(VAR_A", "$(VAR_A"},
		{"$(VAR_A)$", "A$"},
		{"$", "$"},
		{"$$", "$"},
		{"$$$(VAR_A)", "$A"},
		{"$$$$(VAR_A)", "$$(VAR_A)"},
		{"$VAR_A", "$VAR_A"},
		{"$()", "$()"},
		{"$ü", "$ü"},
		{"$(VAR_A)ü$(VAR_B)", "AüB"},
	} {
		if got := testenv.Expand(tc.in, testenv.MappingFor(vars)); got != tc.want {
			t.Errorf("Expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestKubeletEnv runs a container's env and checks its environment, variable by variable:
// values, references to earlier variables and service variables, escapes, forward
// references left as written, field and resource references, the image's variables and the
// runtime's; and its command line, whose references see every variable.
func TestKubeletEnv(t *testing.T) {
	c := corev1.Container{Name: "app", Image: "img", Command: []string{"/usr/bin/env"}, WorkingDir: "/var/lib/rgk-work",
		Args: []string{"--", "/bin/sh", "-c", `env; printf 'arg=%s\n' "$@"`, "sh", "$(LATER)", "$$(A)", "$(NOPE)", "$(POD_IP):15021"}}
	field := func(p string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: p}}
	}
	res := func(r, div string) *corev1.EnvVarSource {
		s := &corev1.ResourceFieldSelector{Resource: r}
		if div != "" {
			s.Divisor = resource.MustParse(div)
		}
		return &corev1.EnvVarSource{ResourceFieldRef: s}
	}
	c.Env = []corev1.EnvVar{
		{Name: "A", Value: "a"},
		{Name: "B", Value: "$(A)-b"},
		{Name: "ESC", Value: "$$(A)"},
		{Name: "FWD", Value: "$(LATER)"},
		{Name: "LATER", Value: "late"},
		{Name: "SVC", Value: "$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"},
		{Name: "KUBERNETES_SERVICE_PORT", Value: "6443"},
		{Name: "OPEN", Value: "$(A"},
		{Name: "DOLLARS", Value: "$$$(A)$"},
		{Name: "EMPTY", Value: ""},
		{Name: "IMG", Value: "container"},
		{Name: "POD_IP", ValueFrom: field("status.podIP")},
		{Name: "POD_IPS", ValueFrom: field("status.podIPs")},
		{Name: "POD_NAME", ValueFrom: field("metadata.name")},
		{Name: "POD_NAMESPACE", ValueFrom: field("metadata.namespace")},
		{Name: "NODE", ValueFrom: field("spec.nodeName")},
		{Name: "SA", ValueFrom: field("spec.serviceAccountName")},
		{Name: "LABEL", ValueFrom: field("metadata.labels['app']")},
		{Name: "HEALTH", Value: "$(POD_IP):15021"},
		{Name: "CPU", ValueFrom: res("limits.cpu", "")},
		{Name: "MEM", ValueFrom: res("requests.memory", "1Mi")},
		{Name: "NODE_MEM", ValueFrom: res("limits.memory", "1")},
		{Name: "A", Value: "again-$(A)"},
	}
	c.Resources = corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m")},
		Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
	}
	pod := newPod("envpod", nil, c)
	pod.Labels = map[string]string{"app": "shop"}
	pod.Spec.ServiceAccountName = "shop-sa"
	r, p := runPod(t, pod, testenv.PodOptions{
		Images:      map[string]testenv.Image{"img": {Env: []string{"IMG=image", "FROM_IMAGE=yes", "PATH=/usr/bin:/bin"}}},
		ServiceEnv:  map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
		Allocatable: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")},
	})
	out := exited(t, r, "app", 0)
	got := map[string]string{}
	var args []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if a, ok := strings.CutPrefix(l, "arg="); ok {
			args = append(args, a)
			continue
		}
		k, v, _ := strings.Cut(l, "=")
		got[k] = v
	}
	ip := p.Addr.String()
	want := map[string]string{
		"A": "again-a", "B": "a-b", "ESC": "$(A)", "FWD": "$(LATER)", "LATER": "late",
		"SVC": "10.96.0.1:443", "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "6443",
		"OPEN": "$(A", "DOLLARS": "$a$", "EMPTY": "", "IMG": "container", "FROM_IMAGE": "yes",
		"POD_IP": ip, "POD_IPS": ip, "POD_NAME": "envpod", "POD_NAMESPACE": "shop", "NODE": "node",
		"SA": "shop-sa", "LABEL": "shop", "HEALTH": ip + ":15021", "CPU": "2", "MEM": "64",
		"NODE_MEM": strconv.Itoa(2 << 30), "PATH": "/usr/bin:/bin", "HOSTNAME": "envpod", "HOME": "/root",
		"PWD": "/var/lib/rgk-work", // the container's sh sets it, from its working directory, which the runtime made
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("environment (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"late", "$(A)", "$(NOPE)", ip + ":15021"}, args); d != "" {
		t.Errorf("args (-want +got):\n%s", d)
	}
}

// TestKubeletServiceLinks checks that without service links a container gets only the API
// server's service variables.
func TestKubeletServiceLinks(t *testing.T) {
	no := false
	pod := newPod("links", nil, corev1.Container{Name: "c", Image: "debian", Command: []string{"/usr/bin/env"}})
	pod.Spec.EnableServiceLinks = &no
	r, _ := runPod(t, pod, testenv.PodOptions{ServiceEnv: map[string]string{
		"KUBERNETES_SERVICE_HOST": "10.96.0.1", "ORDERS_SERVICE_HOST": "10.96.0.7"}})
	got := strings.Fields(exited(t, r, "c", 0))
	if !slices.Contains(got, "KUBERNETES_SERVICE_HOST=10.96.0.1") || slices.Contains(got, "ORDERS_SERVICE_HOST=10.96.0.7") {
		t.Errorf("environment %q, want KUBERNETES_SERVICE_HOST and not ORDERS_SERVICE_HOST", got)
	}
}

// TestKubeletCommand checks Docker's rules for a container's command line from its command,
// its args and its image's entrypoint and cmd.
func TestKubeletCommand(t *testing.T) {
	echo := map[string]testenv.Image{"echo": {Entrypoint: []string{"/bin/echo", "entrypoint"}, Cmd: []string{"cmd"}}}
	for _, tc := range []struct {
		name          string
		command, args []string
		want          string
	}{
		{"image", nil, nil, "entrypoint cmd"},
		{"args", nil, []string{"args"}, "entrypoint args"},
		{"command", []string{"/bin/echo", "command"}, nil, "command"},
		{"both", []string{"/bin/echo", "command"}, []string{"args"}, "command args"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := runPod(t, newPod("cmd", nil, corev1.Container{Name: "c", Image: "echo", Command: tc.command, Args: tc.args}),
				testenv.PodOptions{Images: echo})
			if got := strings.TrimSpace(exited(t, r, "c", 0)); got != tc.want {
				t.Errorf("ran %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("image file", func(t *testing.T) {
		// The image's file is bound at its path, so the command finds it there.
		img := map[string]testenv.Image{"tool": {Entrypoint: []string{"/usr/local/bin/tool"},
			Files: map[string]string{"/usr/local/bin/tool": "/bin/echo"}}}
		r, _ := runPod(t, newPod("file", nil, corev1.Container{Name: "c", Image: "tool", Args: []string{"from", "the", "image"}}),
			testenv.PodOptions{Images: img})
		if got := strings.TrimSpace(exited(t, r, "c", 0)); got != "from the image" {
			t.Errorf("ran %q", got)
		}
	})
	t.Run("missing image", func(t *testing.T) {
		r, _ := runPod(t, newPod("noimg", nil, corev1.Container{Name: "c", Image: "nowhere"}), testenv.PodOptions{})
		if err := r.WaitStarted(kubeletCtx(t)); err == nil || !strings.Contains(err.Error(), "ErrImagePull") {
			t.Errorf("pod started: %v, want ErrImagePull", err)
		}
	})
}

// TestKubeletInitOrder checks that init containers run one at a time, in order, before the
// containers, and that a failing one fails the pod: nothing after it runs.
func TestKubeletInitOrder(t *testing.T) {
	t.Run("in order", func(t *testing.T) {
		pod := shared(newPod("order", []corev1.Container{
			shC("init-1", "sleep 0.2; echo init-1 >>/shared/log"),
			shC("init-2", "echo init-2 >>/shared/log"),
		}, shC("app", "echo app >>/shared/log; cat /shared/log")))
		r, _ := runPod(t, pod, testenv.PodOptions{})
		if got := exited(t, r, "app", 0); got != "init-1\ninit-2\napp\n" {
			t.Errorf("log %q, want init-1, init-2, app", got)
		}
	})
	t.Run("failing", func(t *testing.T) {
		pod := newPod("failing", []corev1.Container{shC("init-1", "echo failing; exit 3"), shC("init-2", "echo ran")}, shC("app", "echo ran"))
		r, _ := runPod(t, pod, testenv.PodOptions{})
		err := r.WaitStarted(kubeletCtx(t))
		if err == nil || !strings.Contains(err.Error(), "init container init-1 exited with code 3") {
			t.Fatalf("WaitStarted: %v, want init-1's failure", err)
		}
		if _, err := r.Wait(kubeletCtx(t), "app"); err == nil {
			t.Error("app ran")
		}
		if out := r.Output("init-2") + r.Output("app"); out != "" {
			t.Errorf("after the failure, output %q", out)
		}
		if got := r.Output("init-1"); got != "failing\n" {
			t.Errorf("init-1's output %q", got)
		}
	})
}

// httpServer is a shell command line serving HTTP on port 15021 with python3 once /shared/serve
// exists (the test's readiness switch) and logging its requests to /shared/requests.
const httpServer = `while [ ! -e /shared/serve ]; do sleep 0.05; done; date +%s%N >/shared/serving; exec python3 -m http.server 15021 --bind 0.0.0.0 2>>/shared/requests`

// TestKubeletNativeSidecar checks a native sidecar (an init container with restartPolicy
// Always): the containers start only once its startup probe, an httpGet on the pod's
// address from the node, succeeds; it stops after them; a startup probe that keeps failing
// fails the pod.
func TestKubeletNativeSidecar(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	sidecar := func(threshold int32) corev1.Container {
		c := shC("sidecar", `trap 'date +%s%N >/shared/sidecar-term; kill $pid; exit 0' TERM; (`+httpServer+`) & pid=$!; wait`)
		c.RestartPolicy = &always
		c.StartupProbe = &corev1.Probe{PeriodSeconds: 1, FailureThreshold: threshold, ProbeHandler: corev1.ProbeHandler{
			HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("hc")}}}
		c.Ports = []corev1.ContainerPort{{Name: "hc", ContainerPort: 15021}}
		return c
	}
	app := shC("app", `trap 'date +%s%N >/shared/app-term; exit 0' TERM; date +%s%N >/shared/app; while :; do sleep 0.05; done`)
	// Ready once its trap is set, so that Stop's SIGTERM finds it.
	app.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-e", "/shared/app"}}}}

	t.Run("ready", func(t *testing.T) {
		pod := shared(newPod("native", []corev1.Container{sidecar(30)}, app))
		r, _ := runPod(t, pod, testenv.PodOptions{})
		vol := volumeDir(t, r)
		time.Sleep(time.Second)
		if _, err := os.Stat(vol + "/app"); err == nil {
			t.Fatal("the app started before the sidecar was ready")
		}
		os.WriteFile(vol+"/serve", nil, 0o644)
		if err := r.WaitReady(kubeletCtx(t), "app"); err != nil {
			t.Fatal(err)
		}
		r.Stop()
		serving, started := stamp(t, vol+"/serving"), stamp(t, vol+"/app")
		if started < serving {
			t.Errorf("the app started %v before the sidecar served", time.Duration(serving-started))
		}
		if term, sterm := stamp(t, vol+"/app-term"), stamp(t, vol+"/sidecar-term"); sterm < term {
			t.Errorf("the sidecar was stopped %v before the app", time.Duration(term-sterm))
		}
		if reqs, _ := os.ReadFile(vol + "/requests"); !strings.Contains(string(reqs), "10.213.0.1 - - ") {
			t.Errorf("the probe did not come from the node's address 10.213.0.1:\n%s", reqs)
		}
		for name, want := range map[string]int{"app": 0, "sidecar": 0} {
			exited(t, r, name, want)
		}
	})
	t.Run("never ready", func(t *testing.T) {
		pod := shared(newPod("notready", []corev1.Container{sidecar(2)}, app))
		r, _ := runPod(t, pod, testenv.PodOptions{})
		begin := time.Now()
		err := r.WaitStarted(kubeletCtx(t))
		if err == nil || !strings.Contains(err.Error(), "startup probe") {
			t.Fatalf("WaitStarted: %v, want the startup probe's failure", err)
		}
		if d := time.Since(begin); d < 2*time.Second || d > 5*time.Second {
			t.Errorf("the pod failed after %v, want about failureThreshold*periodSeconds = 2s", d)
		}
		if _, err := os.Stat(volumeDir(t, r) + "/app"); err == nil {
			t.Error("the app started")
		}
	})
}

// volumeDir is the host directory of the pod's emptyDir "shared": the test's switch into
// the pod.
func volumeDir(t *testing.T, r *testenv.PodRun) string {
	t.Helper()
	d, err := r.VolumeDir("shared")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// stamp reads a `date +%s%N` file.
func stamp(t *testing.T, file string) int64 {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestKubeletPostStart checks that a container's postStart hook, run inside the container,
// holds the next container until it returns (how an app waits for a plain sidecar container
// on API servers without native sidecars), and WaitReady's readiness probe.
func TestKubeletPostStart(t *testing.T) {
	sidecar := shC("sidecar", `sleep 0.5; touch /shared/ready; exec sleep 60`)
	sidecar.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
		Command: []string{"sh", "-c", "while [ ! -e /shared/ready ]; do sleep 0.05; done; echo held >/shared/hook"}}}}
	sidecar.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-e", "/shared/ready"}}}}
	pod := shared(newPod("poststart", nil, sidecar, shC("app", `cat /shared/hook; test -e /shared/ready && echo after-ready`)))
	pod.Spec.TerminationGracePeriodSeconds = new(int64(1))
	r, _ := runPod(t, pod, testenv.PodOptions{})
	if err := r.WaitReady(kubeletCtx(t), "sidecar"); err != nil {
		t.Fatal(err)
	}
	if got := exited(t, r, "app", 0); got != "held\nafter-ready\n" {
		t.Errorf("app saw %q, want the hook's file and the sidecar ready", got)
	}
	r.Stop()
	// sleep is the container's process 1, which ignores SIGTERM: it is killed at the end of
	// the grace period.
	exited(t, r, "sidecar", 137)
}

// TestKubeletSecurity checks the users, groups, capabilities and no_new_privs a container
// gets from its securityContext and the pod's, as /proc/self/status shows them.
func TestKubeletSecurity(t *testing.T) {
	i64 := func(n int64) *int64 { return &n }
	yes, no := true, false
	const defaultCaps = "00000000a80425fb" // containerd's (and Docker's) default set
	for _, tc := range []struct {
		name string
		pod  *corev1.PodSecurityContext
		sc   *corev1.SecurityContext
		want string // id -u, id -g, id -G, then the status lines
	}{
		{"default", nil, nil, "0 0 0 CapInh=0000000000000000 CapPrm=" + defaultCaps + " CapEff=" + defaultCaps +
			" CapBnd=" + defaultCaps + " CapAmb=0000000000000000 NoNewPrivs=0"},
		{"iptables init", nil, &corev1.SecurityContext{RunAsUser: i64(0), RunAsNonRoot: &no,
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}}},
			"0 0 0 CapInh=0000000000000000 CapPrm=0000000000003000 CapEff=0000000000003000 CapBnd=0000000000003000 CapAmb=0000000000000000 NoNewPrivs=0"},
		{"sidecar", nil, &corev1.SecurityContext{RunAsUser: i64(1337), RunAsGroup: i64(1337), RunAsNonRoot: &yes,
			ReadOnlyRootFilesystem: &yes, AllowPrivilegeEscalation: &no, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			"1337 1337 1337 CapInh=0000000000000000 CapPrm=0000000000000000 CapEff=0000000000000000 CapBnd=0000000000000000 CapAmb=0000000000000000 NoNewPrivs=1"},
		{"non-root keeps the bounding set", nil, &corev1.SecurityContext{RunAsUser: i64(1000),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"CAP_NET_RAW", "chown"}}},
			"1000 0 0 CapInh=0000000000000000 CapPrm=0000000000000000 CapEff=0000000000000000 CapBnd=00000000a80405fa CapAmb=0000000000000000 NoNewPrivs=0"},
		{"pod level, container wins", &corev1.PodSecurityContext{RunAsUser: i64(1000), RunAsGroup: i64(3000),
			SupplementalGroups: []int64{5, 6}, FSGroup: i64(7)}, &corev1.SecurityContext{RunAsUser: i64(2000)},
			"2000 3000 3000 5 6 7 CapInh=0000000000000000 CapPrm=0000000000000000 CapEff=0000000000000000 CapBnd=" + defaultCaps + " CapAmb=0000000000000000 NoNewPrivs=0"},
		{"add ALL drop one", nil, &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"ALL"}, Drop: []corev1.Capability{"SYS_ADMIN"}}},
			"0 0 0 CapInh=0000000000000000 CapPrm=" + allBut(t, 21) + " CapEff=" + allBut(t, 21) + " CapBnd=" + allBut(t, 21) + " CapAmb=0000000000000000 NoNewPrivs=0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := shC("c", `echo $(id -u) $(id -g) $(id -G) $(grep -E '^(Cap|NoNewPrivs)' /proc/self/status | tr -d ':' | tr '\t' '=')`)
			c.SecurityContext = tc.sc
			pod := newPod("sec", nil, c)
			pod.Spec.SecurityContext = tc.pod
			r, _ := runPod(t, pod, testenv.PodOptions{})
			if got := strings.TrimSpace(exited(t, r, "c", 0)); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	t.Run("runAsNonRoot as root", func(t *testing.T) {
		c := shC("c", "echo ran")
		c.SecurityContext = &corev1.SecurityContext{RunAsNonRoot: &yes}
		r, _ := runPod(t, newPod("nonroot", nil, c), testenv.PodOptions{})
		if err := r.WaitStarted(kubeletCtx(t)); err == nil || !strings.Contains(err.Error(), "runAsNonRoot") {
			t.Errorf("WaitStarted: %v, want runAsNonRoot's refusal", err)
		}
	})
}

// allBut is the test process's bounding set (what "ALL" can give) without bit.
func allBut(t *testing.T, bit int) string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(b), "CapBnd:\t")
	set, err := strconv.ParseUint(rest[:16], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%016x", set&^(1<<bit))
}

// TestKubeletPIDNamespace checks that a container's command is its process 1 and sees only
// its own processes.
func TestKubeletPIDNamespace(t *testing.T) {
	// $$$$: the kubelet makes $$ of it (and would make $ of $$), as a pod's author must know.
	// The shell expands the glob itself, after its background child exists, so the count
	// does not race with a pipeline's processes starting.
	r, _ := runPod(t, newPod("pid", nil, shC("c", `echo $$$$; sleep 30 & set -- /proc/[0-9]*; echo $#; kill $!`)), testenv.PodOptions{})
	if got := exited(t, r, "c", 0); got != "1\n2\n" { // sh and sleep
		t.Errorf("pid and process count %q, want 1 and 2", got)
	}
}

// TestKubeletDev checks a container's /dev and /sys, as runc makes them: the usual devices,
// the termination log the kubelet binds, nothing written to the host's /dev, and /sys
// read-only.
func TestKubeletDev(t *testing.T) {
	r, _ := runPod(t, newPod("dev", nil, shC("c", `echo x >/dev/null && echo null
		head -c 4 /dev/zero | od -An -tx1 | tr -d ' '
		ls /dev | tr '\n' ' '; echo
		if (echo 1500 >/sys/class/net/lo/mtu) 2>/dev/null; then echo sys writable; else echo sys read-only; fi
		touch /dev/rgk-probe
		echo "the last words" >/dev/termination-log`)), testenv.PodOptions{})
	want := "null\n00000000\nfd full null ptmx pts random shm stderr stdin stdout termination-log tty urandom zero \nsys read-only\n"
	if got := exited(t, r, "c", 0); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if msg, err := r.TerminationMessage("c"); err != nil || msg != "the last words\n" {
		t.Errorf("termination message %q (%v)", msg, err)
	}
	for _, f := range []string{"/dev/termination-log", "/dev/rgk-probe"} {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			t.Errorf("the host has %s (%v)", f, err)
		}
	}
}

// TestKubeletReadOnlyRoot checks readOnlyRootFilesystem: the root and the image's files are
// read-only, the container's volumes are not, and the host's root stays writable.
func TestKubeletReadOnlyRoot(t *testing.T) {
	yes := true
	c := shC("c", `for f in /ro-probe /etc/ro-probe /tmp/ro-probe /shared/rw-probe /data/rw-probe; do
		if (: >$f) 2>/dev/null; then echo $f writable; else echo $f read-only; fi; done`)
	c.SecurityContext = &corev1.SecurityContext{ReadOnlyRootFilesystem: &yes, RunAsUser: new(int64)}
	pod := shared(newPod("rofs", nil, c))
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "data", MountPath: "/var/lib/rgk-data"})
	pod.Spec.Containers[0].Command[2] = strings.ReplaceAll(pod.Spec.Containers[0].Command[2], "/data/", "/var/lib/rgk-data/")
	r, _ := runPod(t, pod, testenv.PodOptions{})
	want := "/ro-probe read-only\n/etc/ro-probe read-only\n/tmp/ro-probe read-only\n/shared/rw-probe writable\n/var/lib/rgk-data/rw-probe writable\n"
	if got := exited(t, r, "c", 0); got != want {
		t.Errorf("got\n%swant\n%s", got, want)
	}
	for _, f := range []string{"/ro-probe", "/etc/ro-probe", "/tmp/ro-probe", "/shared", "/var/lib/rgk-data"} {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			t.Errorf("the host has %s (%v)", f, err)
		}
	}
}

// TestKubeletLeavesNothing checks that a pod's run leaves nothing behind: no process, no
// mount point on the host, no network namespace, no /etc/netns directory, none of the
// files its containers wrote to their roots.
func TestKubeletLeavesNothing(t *testing.T) {
	before := hostState(t)
	leaks := []string{"/rgk-leak", "/etc/rgk-leak", "/tmp/rgk-leak", "/var/run/rgk-leak", "/usr/rgk-leak"}
	var pids []int
	t.Run("pod", func(t *testing.T) {
		always := corev1.ContainerRestartPolicyAlways
		sc := shC("sidecar", "exec sleep 60")
		sc.RestartPolicy = &always
		// What a container writes to its root is its own, as in its image's writable layer.
		app := shC("app", "touch "+strings.Join(leaks, " ")+"; exec sleep 60")
		app.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-e", leaks[len(leaks)-1]}}}}
		pod := shared(newPod("leaves", []corev1.Container{sc}, app))
		pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts,
			corev1.VolumeMount{Name: "shared", MountPath: "/var/run/restate-grpc/podinfo"},
			corev1.VolumeMount{Name: "shared", MountPath: "/opt/rgk/app"})
		r, _ := runPod(t, pod, testenv.PodOptions{})
		if err := r.WaitReady(kubeletCtx(t), "app"); err != nil {
			t.Fatal(err)
		}
		// Processes exec'd into the containers must go with them too.
		for _, name := range []string{"sidecar", "app"} {
			out, err := r.Exec(kubeletCtx(t), name, "sh", "-c", "sleep 6061 >/dev/null 2>&1 & echo started")
			if err != nil {
				t.Fatalf("exec in %s: %v: %s", name, err, out)
			}
		}
		pids = r.Pids()
		// The test ends with the pod running: its cleanup must take it all away.
	})
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("process %d outlived its pod", pid)
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if cmdline, _ := os.ReadFile("/proc/" + p.Name() + "/cmdline"); string(cmdline) == "sleep\x006061\x00" {
			t.Errorf("process %s, exec'd into a container, outlived its pod", p.Name())
		}
	}
	for _, f := range leaks {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			t.Errorf("the container's %s is on the host (%v)", f, err)
		}
	}
	if after := hostState(t); !cmp.Equal(before, after) {
		t.Errorf("the host changed (-before +after):\n%s", cmp.Diff(before, after))
	}
}

// hostState is what a pod's run could leave on the host: its mounts, network namespaces,
// /etc/netns, /run and /opt.
func hostState(t *testing.T) map[string][]string {
	t.Helper()
	st := map[string][]string{}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			st["mounts"] = append(st["mounts"], f[4])
		}
	}
	for _, dir := range []string{"/run/netns", "/etc/netns", "/run", "/opt"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			st[dir] = append(st[dir], e.Name())
		}
	}
	return st
}

// TestKubeletVolumes checks configMap, secret and projected volumes (keys, items, modes,
// read-only), subPath, and that an emptyDir is shared between containers.
func TestKubeletVolumes(t *testing.T) {
	mode := func(m int32) *int32 { return &m }
	c := shC("c", `cd /vol; for f in cm/a cm/b items/renamed secret/token proj/ns proj/cm-a proj/token sub/file; do
		printf '%s %s %s\n' $f $(stat -L -c %a $f) "$(cat $f)"; done
		if (: >/vol/cm/new) 2>/dev/null; then echo cm writable; else echo cm read-only; fi
		ls /vol/items | tr '\n' ' '; echo`)
	mounts := map[string]string{"cm": "/vol/cm", "items": "/vol/items", "secret": "/vol/secret", "proj": "/vol/proj"}
	pod := newPod("vols", nil, c)
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}}},
		{Name: "items", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"},
			Items: []corev1.KeyToPath{{Key: "a", Path: "renamed", Mode: mode(0o600)}}}}},
		{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds", DefaultMode: mode(0o400)}}},
		{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "ns", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}, Items: []corev1.KeyToPath{{Key: "a", Path: "cm-a"}}}},
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
		}}}},
		{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	for name, path := range mounts {
		pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: name, MountPath: path})
	}
	pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "data", MountPath: "/vol/sub", SubPath: "in/here"})
	pod.Spec.InitContainers = []corev1.Container{shC("writer", "mkdir -p /data/in/here; echo from-init >/data/in/here/file")}
	pod.Spec.InitContainers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	r, _ := runPod(t, pod, testenv.PodOptions{
		ConfigMaps:          map[string]map[string]string{"conf": {"a": "alpha", "b": "beta"}},
		Secrets:             map[string]map[string][]byte{"creds": {"token": []byte("s3cret")}},
		ServiceAccountToken: "sa-token",
	})
	want := `cm/a 644 alpha
cm/b 644 beta
items/renamed 600 alpha
secret/token 400 s3cret
proj/ns 644 shop
proj/cm-a 644 alpha
proj/token 644 sa-token
sub/file 644 from-init
cm read-only
renamed 
`
	if got := exited(t, r, "c", 0); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// TestKubeletNetwork checks a container's network: its hostname is the pod's, it resolves
// the pod network's names through the namespace's hosts file and its own to its address, and
// it serves on the pod's address, which another pod reaches.
func TestKubeletNetwork(t *testing.T) {
	n := testenv.NewPodNet(t, "web", "client")
	web := n.Pod("web")
	pod := newPod("web-7d9f", nil, shC("c", `cat /proc/sys/kernel/hostname; getent hosts client web web-7d9f | tr -s ' ' ' '; exec python3 -m http.server 8080 --bind 0.0.0.0`))
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}
	r := testenv.RunPod(t, kubeletCtx(t), web, pod, testenv.PodOptions{Images: debian})
	if err := r.WaitReady(kubeletCtx(t), "c"); err != nil {
		t.Fatal(err)
	}
	resp, err := n.Pod("client").HTTPClient().Get("http://" + web.Addr.String() + ":8080/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := fmt.Sprintf("web-7d9f\n%s client\n%s web\n%[2]s web-7d9f\n", n.Pod("client").Addr, web.Addr)
	if got := r.Output("c"); !strings.HasPrefix(got, want) {
		t.Errorf("output\n%s\nwant it to begin with\n%s", got, want)
	}
}

// fakeSidecar stands for the sidecar binary in TestKubeletInjectedPod: `iptables` installs a
// redirect as the init container would, `run` prints its annotations file and serves
// /readyz and /healthz on its --health address until SIGTERM.
const fakeSidecar = `#!/bin/sh
set -e
case "$1" in
iptables)
	echo "iptables $*"
	exec iptables -t nat -A OUTPUT -p tcp --dport 50051 -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15001 ;;
run)
	for a; do case $a in --health=*) health=${a#--health=};; --annotations=*) ann=${a#--annotations=};; esac; done
	cat "$ann"; echo
	exec /usr/bin/python3 -c '
import http.server, signal, sys
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
host, port = sys.argv[1].rsplit(":", 1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path in ("/readyz", "/healthz") else 404)
        self.end_headers()
print("serving on", sys.argv[1], flush=True)
http.server.HTTPServer((host, int(port)), H).serve_forever()
' "$health" ;;
esac
exit 64
`

// TestKubeletInjectedPod runs a pod shaped as ISSUE11.md says the injector writes it in
// iptables mode: the init container installs the redirect as root with NET_ADMIN and NET_RAW
// only, the native sidecar runs as 1337 with a read-only root and no capabilities, reads the
// annotations file and serves its health on the pod's address, and the app starts once the
// startup probe on /readyz passed.
func TestKubeletInjectedPod(t *testing.T) {
	bin := t.TempDir() + "/sidecar"
	if err := os.WriteFile(bin, []byte(fakeSidecar), 0o755); err != nil {
		t.Fatal(err)
	}
	i64 := func(n int64) *int64 { return &n }
	yes, no := true, false
	always := corev1.ContainerRestartPolicyAlways
	health := &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 30, ProbeHandler: corev1.ProbeHandler{
		HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(15021)}}}
	field := func(p string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: p}}
	}
	const image = "ghcr.io/restate-grpc/sidecar:v0.1.0"
	pod := newPod("orders-5c9d8", []corev1.Container{{
		Name: "restate-grpc-init", Image: image, Command: []string{"/usr/local/bin/sidecar"},
		Args: []string{"iptables", "--ports=50051", "--proxy-uid=1337", "--to-port=15001", "--inbound-port=9080", "--health-port=15021"},
		SecurityContext: &corev1.SecurityContext{RunAsUser: i64(0), RunAsNonRoot: &no, Capabilities: &corev1.Capabilities{
			Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}}},
	}, {
		Name: "restate-grpc", Image: image, RestartPolicy: &always, Command: []string{"/usr/local/bin/sidecar"},
		Args: []string{"run", "--annotations=/var/run/restate-grpc/podinfo/annotations", "--health=$(POD_IP):15021"},
		Env: []corev1.EnvVar{{Name: "POD_IP", ValueFrom: field("status.podIP")}, {Name: "POD_NAME", ValueFrom: field("metadata.name")},
			{Name: "POD_NAMESPACE", ValueFrom: field("metadata.namespace")}},
		Ports:        []corev1.ContainerPort{{Name: "restate-grpc-hc", ContainerPort: 15021}},
		StartupProbe: health, ReadinessProbe: health,
		VolumeMounts: []corev1.VolumeMount{{Name: "restate-grpc-podinfo", MountPath: "/var/run/restate-grpc/podinfo", ReadOnly: true}},
		SecurityContext: &corev1.SecurityContext{RunAsUser: i64(1337), RunAsGroup: i64(1337), RunAsNonRoot: &yes, ReadOnlyRootFilesystem: &yes,
			AllowPrivilegeEscalation: &no, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
	}}, shC("app", `trap 'exit 0' TERM; echo app-started; touch /tmp/ready; while :; do sleep 0.05; done`))
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-e", "/tmp/ready"}}}}
	pod.Annotations = map[string]string{"restate-grpc.io/inject": "true", "restate-grpc.io/status": "injected",
		"restate-grpc.io/outbound-ports": "50051"}
	pod.Spec.Volumes = []corev1.Volume{{Name: "restate-grpc-podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
		Items: []corev1.DownwardAPIVolumeFile{{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}}}}}}}
	r, p := runPod(t, pod, testenv.PodOptions{Images: map[string]testenv.Image{
		"debian": {},
		image:    {Files: map[string]string{"/usr/local/bin/sidecar": bin}},
	}})
	if err := r.WaitReady(kubeletCtx(t), "app"); err != nil {
		t.Fatal(err)
	}
	exited(t, r, "restate-grpc-init", 0)
	rules, err := exec.Command("ip", "netns", "exec", p.NS, "iptables", "-t", "nat", "-S", "OUTPUT").CombinedOutput()
	if err != nil || !strings.Contains(string(rules), "--uid-owner 1337 -j REDIRECT --to-ports 15001") {
		t.Errorf("the pod's nat OUTPUT chain: %v\n%s", err, rules)
	}
	want := `restate-grpc.io/inject="true"` + "\n" + `restate-grpc.io/outbound-ports="50051"` + "\n" + `restate-grpc.io/status="injected"` + "\n" +
		"serving on " + p.Addr.String() + ":15021\n"
	if got := r.Output("restate-grpc"); !strings.HasPrefix(got, want) {
		t.Errorf("the sidecar's output\n%s\nwant it to begin with\n%s", got, want)
	}
	if got := r.Output("app"); got != "app-started\n" {
		t.Errorf("the app's output %q", got)
	}
	r.Stop()
	for _, c := range []string{"app", "restate-grpc"} {
		exited(t, r, c, 0)
	}
}

// storedPod is a pod as a kube-apiserver stores it: defaults filled in, and the service
// account's projected volume the ServiceAccount admission plugin adds to every container.
const storedPod = `
apiVersion: v1
kind: Pod
metadata:
  name: shop-6f7c9b-x2kzq
  namespace: shop
  uid: 5b0e4c1d-7a2f-4c3e-9d8b-1f6a2e3c4d5e
  resourceVersion: "1234"
  creationTimestamp: "2026-12-01T23:00:00Z"
  labels: {app: shop, pod-template-hash: 6f7c9b}
  annotations: {restate-grpc.io/inject: "true"}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: shop-6f7c9b, uid: 0a1b2c3d-0000-0000-0000-000000000000, controller: true, blockOwnerDeletion: true}
  managedFields:
  - {manager: kube-controller-manager, operation: Update, apiVersion: v1, time: "2026-12-01T23:00:00Z", fieldsType: FieldsV1, fieldsV1: {"f:metadata": {}}}
spec:
  containers:
  - name: shop
    image: debian
    command: [/bin/sh, -c]
    args: ['cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; echo $KUBERNETES_SERVICE_HOST']
    imagePullPolicy: IfNotPresent
    resources: {}
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
    volumeMounts:
    - {name: kube-api-access-7h2xq, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
  dnsPolicy: ClusterFirst
  enableServiceLinks: true
  preemptionPolicy: PreemptLowerPriority
  priority: 0
  restartPolicy: Always
  schedulerName: default-scheduler
  securityContext: {}
  serviceAccount: default
  serviceAccountName: default
  terminationGracePeriodSeconds: 30
  tolerations:
  - {effect: NoExecute, key: node.kubernetes.io/not-ready, operator: Exists, tolerationSeconds: 300}
  volumes:
  - name: kube-api-access-7h2xq
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken: {expirationSeconds: 3607, path: token}
      - configMap:
          name: kube-root-ca.crt
          items: [{key: ca.crt, path: ca.crt}]
      - downwardAPI:
          items:
          - path: namespace
            fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}
status:
  phase: Pending
  qosClass: BestEffort
`

// TestKubeletStoredPod runs a pod decoded from what an API server stores, with the fields a
// hand-written pod lacks.
func TestKubeletStoredPod(t *testing.T) {
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict([]byte(storedPod), &pod); err != nil {
		t.Fatal(err)
	}
	r, _ := runPod(t, &pod, testenv.PodOptions{
		ServiceEnv:          map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
		ConfigMaps:          map[string]map[string]string{"kube-root-ca.crt": {"ca.crt": "-----BEGIN CERTIFICATE-----\n"}},
		ServiceAccountToken: "eyJhbGciOiJSUzI1NiJ9.e30.sig",
	})
	if got := exited(t, r, "shop", 0); got != "shop\n10.96.0.1\n" {
		t.Errorf("output %q", got)
	}
}

// TestKubeletAnnotationsUpdate checks that SetAnnotations changes the downward-API file a
// running container reads, at once through ..data, and leaves one timestamped directory.
func TestKubeletAnnotationsUpdate(t *testing.T) {
	pod := shared(newPod("update", nil, shC("app", `cd /podinfo; cat annotations; echo; touch /shared/read
		while [ ! -e /shared/go ]; do sleep 0.05; done; cat annotations; echo; ls -a | tr '\n' ' '`)))
	pod.Annotations = map[string]string{"restate-grpc.io/inject": "true", "restate-grpc.io/log-level": "info"}
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
		Items: []corev1.DownwardAPIVolumeFile{{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}}}}}})
	pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "podinfo", MountPath: "/podinfo"})
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-e", "/shared/read"}}}}
	r, _ := runPod(t, pod, testenv.PodOptions{})
	if err := r.WaitReady(kubeletCtx(t), "app"); err != nil {
		t.Fatal(err)
	}
	if err := r.SetAnnotations(map[string]string{"restate-grpc.io/inject": "true", "restate-grpc.io/log-level": "debug"}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(volumeDir(t, r)+"/go", nil, 0o644)
	out := exited(t, r, "app", 0)
	lines := strings.Split(out, "\n")
	if len(lines) != 5 || lines[1] != `restate-grpc.io/log-level="info"` || lines[3] != `restate-grpc.io/log-level="debug"` {
		t.Fatalf("output:\n%s\nwant the annotations with log-level info, then debug after the update", out)
	}
	if f := strings.Fields(lines[4]); len(f) != 5 || !strings.HasPrefix(f[2], "..20") || f[3] != "..data" || f[4] != "annotations" {
		t.Errorf("the volume holds %q, want ., .., one timestamped directory, ..data, annotations", f)
	}
}
