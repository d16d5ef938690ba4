package injector

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/restate-grpc/restate-grpc/internal/config"
)

// What the injector adds to a pod. A pod that holds them was injected before: Inject takes
// them out and puts them back as they should be, so injecting twice changes nothing.
const (
	SidecarName = "restate-grpc"      // the sidecar container
	InitName    = "restate-grpc-init" // iptables mode: writes the redirect rules, then exits
	VolumeName  = "restate-grpc-podinfo"

	StatusAnnotation = config.AnnotationPrefix + "status"
	InjectAnnotation = config.AnnotationPrefix + "inject"
	StatusInjected   = "injected"

	// DisableLabel on a namespace, with the value "disabled", keeps the injector out of it.
	DisableLabel = config.AnnotationPrefix + "inject"

	Binary     = "/usr/local/bin/sidecar"
	PodinfoDir = "/var/run/restate-grpc/podinfo"
	HealthPort = 15021
	// ProxyUID is the sidecar's uid, whose connections the iptables rules never capture.
	ProxyUID = 1337
)

// envPodIP, in an app container, is the pod's address, so no_proxy can name it.
const envPodIP = "RESTATE_GRPC_POD_IP"

// Target is what the injector knows of a pod besides the pod itself.
type Target struct {
	// Namespace is the pod's namespace: the admission request's when the pod names none.
	Namespace string
	// NamespaceDisabled: the namespace is labelled restate-grpc.io/inject=disabled.
	NamespaceDisabled bool
	// Native: the API server runs native sidecars (Kubernetes 1.29 and later).
	Native bool
}

// Injector injects pods with one Config.
type Injector struct {
	cfg *Config
	// own is the injector's own namespace: its pods must come up without it.
	own string
}

// New returns an injector. own is the namespace the injector runs in; its pods are never
// injected, as the webhook would otherwise wait for itself.
func New(cfg *Config, own string) *Injector { return &Injector{cfg: cfg, own: own} }

// Config is the injector's config.
func (in *Injector) Config() *Config { return in.cfg }

// Inject returns the pod as it should run: pod itself when it does not ask for the sidecar,
// else a copy with the sidecar, or a copy whose status annotation says why it was skipped.
// When the pod's annotations are wrong and the policy is reject, it returns an error naming
// each wrong annotation, and no pod.
func (in *Injector) Inject(pod *corev1.Pod, t Target) (*corev1.Pod, error) {
	if pod.Annotations[InjectAnnotation] != "true" {
		return pod, nil
	}
	out := pod.DeepCopy()
	skip := func(reason string) (*corev1.Pod, error) {
		unInject(out)
		out.Annotations[StatusAnnotation] = "skipped: " + reason
		return out, nil
	}
	switch {
	case t.Namespace == in.own && in.own != "":
		return skip(fmt.Sprintf("namespace %s is the injector's own (its pods must start without it)", t.Namespace))
	case t.Namespace == "kube-system" || t.Namespace == "kube-public":
		return skip(fmt.Sprintf("namespace %s belongs to Kubernetes", t.Namespace))
	case t.NamespaceDisabled:
		return skip(fmt.Sprintf("namespace %s is labelled %s=disabled", t.Namespace, DisableLabel))
	case pod.Spec.HostNetwork:
		return skip("the pod uses the host's network: interception would capture the node's own traffic")
	}
	// The injector's defaults are written into the pod, so its annotations are the whole
	// config, for the sidecar and for whoever reads the pod.
	for name, v := range map[string]string{
		"interception":   in.cfg.Interception,
		"ingress-url":    in.cfg.IngressURL.String(),
		"admin-url":      in.cfg.AdminURL.String(),
		"shutdown-grace": shutdownGrace(terminationGrace(pod)).String(),
	} {
		if _, ok := out.Annotations[config.AnnotationPrefix+name]; !ok && v != "" {
			out.Annotations[config.AnnotationPrefix+name] = v
		}
	}
	delete(out.Annotations, StatusAnnotation) // the injector's own, not part of the config
	p, err := config.ParseAnnotations(out.Annotations, podEnv(out, t))
	if err == nil {
		err = in.checkPod(out, p)
	}
	if err != nil {
		if in.cfg.OnInvalid == OnInvalidSkip {
			return skip(err.Error())
		}
		return nil, err
	}
	unInject(out)
	in.addSidecar(out, p, t.Native)
	out.Annotations[StatusAnnotation] = StatusInjected
	return out, nil
}

// podEnv is the sidecar container's environment as the injector can know it: the variables
// it sets from the downward API, with stand-in values of the right form. Files of the pod
// cannot be checked from here.
func podEnv(pod *corev1.Pod, t Target) config.Env {
	vars := map[string]string{"POD_IP": "192.0.2.1", "POD_NAME": pod.Name, "POD_NAMESPACE": t.Namespace}
	if vars["POD_NAME"] == "" {
		vars["POD_NAME"] = pod.GenerateName + "x"
	}
	return config.Env{Getenv: func(k string) string { return vars[k] }}
}

// checkPod finds what the API server would refuse, or what would make the sidecar useless,
// before the sidecar is added.
func (in *Injector) checkPod(pod *corev1.Pod, p *config.Pod) error {
	var errs config.AnnotationError
	req, lim := in.resources(p).Requests, in.resources(p).Limits
	for _, r := range []struct {
		name corev1.ResourceName
		ann  string
	}{{corev1.ResourceCPU, "proxy-cpu"}, {corev1.ResourceMemory, "proxy-memory"}} {
		q, ok1 := req[r.name]
		l, ok2 := lim[r.name]
		if ok1 && ok2 && q.Cmp(l) > 0 {
			errs.Problems = append(errs.Problems, config.Problem{
				Field:   config.AnnotationPrefix + r.ann,
				Message: fmt.Sprintf("the %s request %s is above its limit %s (the API server would refuse the pod)", r.name, q.String(), l.String()),
			})
		}
	}
	if g, tg := p.Config.Shutdown.Grace.Std(), terminationGrace(pod); g >= tg {
		errs.Problems = append(errs.Problems, config.Problem{
			Field: config.AnnotationPrefix + "shutdown-grace",
			Message: fmt.Sprintf("%s is not below the pod's terminationGracePeriodSeconds (%s): the kubelet would kill the sidecar before its calls drain; leave it out for %s",
				g, tg, shutdownGrace(tg)),
		})
	}
	if p.Interception == config.InterceptIPTables {
		for _, c := range appContainers(pod) {
			if uid := runAsUser(pod, c); uid != nil && *uid == ProxyUID {
				errs.Problems = append(errs.Problems, config.Problem{
					Field:   config.AnnotationPrefix + "interception",
					Message: fmt.Sprintf("container %s runs as uid %d, the sidecar's, whose connections iptables never captures: its calls would bypass the sidecar", c.Name, ProxyUID),
				})
			}
		}
	}
	if len(errs.Problems) > 0 {
		return &errs
	}
	return nil
}

// terminationGrace is how long the kubelet waits between SIGTERM and SIGKILL for the pod.
func terminationGrace(pod *corev1.Pod) time.Duration {
	if s := pod.Spec.TerminationGracePeriodSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	return corev1.DefaultTerminationGracePeriodSeconds * time.Second
}

// shutdownGrace is the sidecar's drain for a pod the kubelet kills tg after SIGTERM: 5s less,
// so the sidecar exits 0 (its calls answered or cut) and flushes its spans before the
// SIGKILL; half of tg when that is shorter; at least the 1s shutdown.grace allows. A native
// sidecar gets its SIGTERM only once the app's containers have stopped, later than tg's
// start, and is then bounded by what is left of tg: the drain ends early when its calls are
// done, and the app, being gone, makes no new ones.
func shutdownGrace(tg time.Duration) time.Duration {
	return min(max(tg-5*time.Second, tg/2, time.Second), time.Hour)
}

func runAsUser(pod *corev1.Pod, c *corev1.Container) *int64 {
	if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
		return c.SecurityContext.RunAsUser
	}
	if pod.Spec.SecurityContext != nil {
		return pod.Spec.SecurityContext.RunAsUser
	}
	return nil
}

// resources are the injector's defaults with the pod's annotations over them.
func (in *Injector) resources(p *config.Pod) corev1.ResourceRequirements {
	r := *in.cfg.Resources.DeepCopy()
	set := func(l *corev1.ResourceList, name corev1.ResourceName, v string) {
		if v == "" {
			return
		}
		if *l == nil {
			*l = corev1.ResourceList{}
		}
		(*l)[name] = resource.MustParse(v) // ParseAnnotations checked it
	}
	set(&r.Requests, corev1.ResourceCPU, p.CPU)
	set(&r.Limits, corev1.ResourceCPU, p.CPULimit)
	set(&r.Requests, corev1.ResourceMemory, p.Memory)
	set(&r.Limits, corev1.ResourceMemory, p.MemoryLimit)
	return r
}

// unInject takes out what an earlier injection added.
func unInject(pod *corev1.Pod) {
	ours := func(c corev1.Container) bool { return c.Name == SidecarName || c.Name == InitName }
	pod.Spec.InitContainers = slices.DeleteFunc(pod.Spec.InitContainers, ours)
	pod.Spec.Containers = slices.DeleteFunc(pod.Spec.Containers, ours)
	pod.Spec.Volumes = slices.DeleteFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == VolumeName })
	if len(pod.Spec.InitContainers) == 0 {
		pod.Spec.InitContainers = nil
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
}

// appContainers are the pod's own containers, in both lists.
func appContainers(pod *corev1.Pod) []*corev1.Container {
	var cs []*corev1.Container
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			if list[i].Name != SidecarName && list[i].Name != InitName {
				cs = append(cs, &list[i])
			}
		}
	}
	return cs
}

func (in *Injector) addSidecar(pod *corev1.Pod, p *config.Pod, native bool) {
	// The rules and the proxy variables send the app's calls to the port the sidecar listens
	// on, and leave its inbound port alone; both addresses were validated.
	port := func(addr string) int {
		_, p, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(p)
		return n
	}
	var inboundPort, outboundPort int
	if inb := p.Config.Inbound; inb != nil {
		inboundPort = port(inb.Listen)
	}
	if o := p.Config.Outbound; o != nil {
		outboundPort = port(o.Listen)
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name: VolumeName,
		VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}}},
		}},
	})
	sc := in.sidecarContainer(p, inboundPort)
	var front []corev1.Container
	if p.Interception == config.InterceptIPTables {
		front = append(front, in.initContainer(p, inboundPort, outboundPort))
	}
	// The app's own init containers come after the sidecar, which must already serve what the
	// rules redirect to them.
	if native {
		always := corev1.ContainerRestartPolicyAlways
		sc.RestartPolicy = &always
		front = append(front, sc)
	} else {
		// Without native sidecars, the kubelet starts containers in order and the next one
		// only once a container's postStart hook has returned: the app waits for the sidecar.
		sc.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{
			Exec: &corev1.ExecAction{Command: []string{Binary, "wait", "--outbound", "--timeout=2m"}},
		}}
		pod.Spec.Containers = append([]corev1.Container{sc}, pod.Spec.Containers...)
	}
	if len(front) > 0 {
		pod.Spec.InitContainers = append(front, pod.Spec.InitContainers...)
	}
	if p.Interception == config.InterceptProxyEnv {
		for _, c := range appContainers(pod) {
			if !native && slices.ContainsFunc(pod.Spec.InitContainers, func(ic corev1.Container) bool { return ic.Name == c.Name }) {
				continue // runs before a plain sidecar container starts: it must call out directly
			}
			in.setProxyEnv(c, outboundPort)
		}
	}
}

func (in *Injector) sidecarContainer(p *config.Pod, inboundPort int) corev1.Container {
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(HealthPort)}},
			PeriodSeconds:    period,
			FailureThreshold: failures,
			TimeoutSeconds:   1,
		}
	}
	ports := []corev1.ContainerPort{{Name: "restate-grpc-hc", ContainerPort: HealthPort, Protocol: corev1.ProtocolTCP}}
	if inboundPort != 0 {
		ports = append(ports, corev1.ContainerPort{Name: "restate-grpc-in", ContainerPort: int32(inboundPort), Protocol: corev1.ProtocolTCP})
	}
	uid := int64(ProxyUID)
	yes, no := true, false
	return corev1.Container{
		Name:            SidecarName,
		Image:           in.cfg.Image,
		ImagePullPolicy: in.cfg.ImagePullPolicy,
		Command:         []string{Binary},
		Args:            []string{"run", "--annotations=" + PodinfoDir + "/annotations"},
		Env: []corev1.EnvVar{
			fieldEnv("POD_IP", "status.podIP"),
			fieldEnv("POD_NAME", "metadata.name"),
			fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			// Health listens on the pod's address, where the kubelet probes it; `sidecar wait`
			// reads it too.
			{Name: "RESTATE_GRPC_HEALTH", Value: net.JoinHostPort("$(POD_IP)", strconv.Itoa(HealthPort))},
		},
		Ports:     ports,
		Resources: in.resources(p),
		// The startup probe holds the app's containers (native sidecar) for up to 2 minutes,
		// until the outbound listener serves: the inbound side may need the app to be up
		// before it registers, and only that decides readiness.
		StartupProbe:   probe("/readyz/outbound", 1, 120),
		ReadinessProbe: probe("/readyz", 5, 3),
		LivenessProbe:  probe("/healthz", 10, 3),
		VolumeMounts:   []corev1.VolumeMount{{Name: VolumeName, MountPath: PodinfoDir, ReadOnly: true}},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                &uid,
			RunAsGroup:               &uid,
			RunAsNonRoot:             &yes,
			ReadOnlyRootFilesystem:   &yes,
			AllowPrivilegeEscalation: &no,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

func (in *Injector) initContainer(p *config.Pod, inboundPort, outboundPort int) corev1.Container {
	args := []string{"iptables"}
	if len(p.OutboundPorts) > 0 {
		ports := make([]string, len(p.OutboundPorts))
		for i, n := range p.OutboundPorts {
			ports[i] = strconv.Itoa(int(n))
		}
		args = append(args, "--ports="+strings.Join(ports, ","))
	}
	args = append(args,
		"--proxy-uid="+strconv.Itoa(ProxyUID),
		"--to-port="+strconv.Itoa(outboundPort),
		"--inbound-port="+strconv.Itoa(inboundPort),
		"--health-port="+strconv.Itoa(HealthPort))
	root := int64(0)
	yes, no := true, false
	return corev1.Container{
		Name:            InitName,
		Image:           in.cfg.Image,
		ImagePullPolicy: in.cfg.ImagePullPolicy,
		Command:         []string{Binary},
		Args:            args,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		// Writing netfilter rules takes NET_ADMIN, and iptables opens a raw socket: nothing else.
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                &root,
			RunAsNonRoot:             &no,
			ReadOnlyRootFilesystem:   &yes,
			AllowPrivilegeEscalation: &no,
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
		},
	}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

// proxyVars are the variables proxy-env mode sets: gRPC C-core (Python, C++, Ruby, PHP) and
// grpc-js read grpc_proxy first, grpc-go https_proxy; the no_ ones exempt destinations.
var proxyVars = []string{"grpc_proxy", "https_proxy", "no_proxy", "no_grpc_proxy"}

// setProxyEnv points c's gRPC libraries at the sidecar. It replaces the container's own proxy
// variables (Go reads HTTPS_PROXY before https_proxy, so the upper-case ones go too) and keeps
// its exemptions, with the sidecar's added: the pod itself, loopback and the API server,
// which the app must keep reaching directly.
func (in *Injector) setProxyEnv(c *corev1.Container, outboundPort int) {
	noProxy := []string{"localhost", "127.0.0.1", "::1", "$(" + envPodIP + ")",
		"$(KUBERNETES_SERVICE_HOST)", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	noProxy = append(noProxy, in.cfg.NoProxy...)
	var kept []string
	c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool {
		switch strings.ToLower(e.Name) {
		case "no_proxy", "no_grpc_proxy":
			for _, h := range strings.Split(e.Value, ",") {
				if h = strings.TrimSpace(h); h != "" && !slices.Contains(kept, h) {
					kept = append(kept, h)
				}
			}
			return true
		case "grpc_proxy", "https_proxy", strings.ToLower(envPodIP):
			return true
		}
		return false
	})
	for _, h := range noProxy {
		if !slices.Contains(kept, h) {
			kept = append(kept, h)
		}
	}
	exempt := strings.Join(kept, ",")
	proxy := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(outboundPort))
	c.Env = append(c.Env, fieldEnv(envPodIP, "status.podIP"))
	for _, name := range proxyVars {
		v := proxy
		if strings.HasPrefix(name, "no_") {
			v = exempt
		}
		c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: v})
	}
}
