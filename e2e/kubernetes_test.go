package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/restate-grpc/restate-grpc/internal/injector"
	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

// The Kubernetes test's namespaces: the injector's (as manifests/ installs it), the apps', and
// one labelled off.
const (
	injectorNS = "restate-grpc-system"
	shopNS     = "shop"
	offNS      = "legacy"
	httpsPort  = 8444 // orders' HTTPS server: a non-gRPC exchange on a captured port
	// examplesNS is manifests/examples' namespace.
	examplesNS = "restate-grpc-examples"
)

// Images of the Kubernetes test: what each image of a stored pod runs. The sidecar's is the one
// manifests/injector's config names.
const (
	ordersImage   = "example/orders:test"
	checkoutImage = "example/checkout:test"
	examplesImage = "ghcr.io/restate-grpc/examples-orders:v0.1.0" // as manifests/examples tags it
)

// kubeRig is a real kube-apiserver with the injector running as manifests/injector deploys it
// (its Deployment's arguments, its config file, its webhook configuration), and a pod network
// where the pods the API server stored run as the kubelet would run them: orders (the callee,
// the test app with an injected inbound sidecar), restate, and an app pod per mode.
type kubeRig struct {
	kube    *testenv.Kube
	net     *testenv.PodNet
	restate *testenv.Restate
	dir     string // binaries and files, readable by the sidecar's uid
	cfg     *injector.Config
	images  map[string]testenv.Image
	caFile  string // orders' HTTPS certificate, which the HTTPS client trusts
}

// TestKubernetes: pods created through a real API server are injected (or refused, or skipped,
// saying why) by the injector the manifests install, and the pods it stored, run with their
// own commands, env and files in network namespaces, make an unmodified app's calls to
// orders:50051 durable through a real Restate server, in both transparent modes, while an
// unmatched call and a non-gRPC exchange pass through.
func TestKubernetes(t *testing.T) {
	r := newKubeRig(t)
	t.Run("admission", r.checkAdmission)
	orders := r.runOrders(t)
	for _, tc := range []struct {
		name, interception string
		native             bool
	}{
		{"proxy-env", "proxy-env", true},
		{"iptables", "iptables", true},
		// What an API server before 1.29 gets: the sidecar a plain container placed first, its
		// postStart hook holding the app until it serves.
		{"proxy-env before 1.29", "proxy-env", false},
	} {
		t.Run(tc.name, func(t *testing.T) { r.checkAppPod(t, tc.interception, tc.native) })
	}
	orders.Stop()
	t.Run("examples", r.checkExamples)
}

func newKubeRig(t *testing.T) *kubeRig {
	t.Helper()
	checkClientTools(t)
	r := &kubeRig{
		kube: testenv.SharedKube(t),
		// The names the manifests use resolve to the pods, as cluster DNS resolves Services.
		net: testenv.NewPodNet(t, "orders orders."+shopNS+".svc", "restate restate.restate.svc restate-nodes.restate.svc", "checkout-proxy-env", "checkout-iptables", "checkout-old",
			"examples-orders orders."+examplesNS+".svc", "examples-shop"),
		dir: sharedDir(t),
	}
	podBinaries(t, r.dir, []string{"sidecar", "testapp"}, "./internal/testservice/client", "./examples/orders/cmd/orders", "./examples/orders/cmd/shop")
	var err error
	if r.restate, err = testenv.StartRestate(r.dir, testenv.RestateOptions{Pod: r.net.Pod("restate")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.restate.Stop)

	if r.cfg, err = injector.LoadConfig(filepath.Join(repoRoot(), "manifests/injector/base/config.yaml")); err != nil {
		t.Fatal(err)
	}
	r.images = map[string]testenv.Image{
		r.cfg.Image:   {Files: map[string]string{injector.Binary: filepath.Join(r.dir, "sidecar")}},
		ordersImage:   {Entrypoint: []string{"/app/testapp"}, Files: map[string]string{"/app/testapp": filepath.Join(r.dir, "testapp")}},
		examplesImage: {Files: map[string]string{"/usr/local/bin/orders": filepath.Join(r.dir, "orders"), "/usr/local/bin/shop": filepath.Join(r.dir, "shop")}},
		checkoutImage: {Env: []string{"NODE_PATH=" + filepath.Join(repoRoot(), ".tools/node_modules")}, Files: map[string]string{"/app/client": filepath.Join(r.dir, "client")}},
	}
	r.serveHTTPS(t)

	ctx := testCtx(t)
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: injectorNS}},
		{ObjectMeta: metav1.ObjectMeta{Name: shopNS}},
		{ObjectMeta: metav1.ObjectMeta{Name: offNS, Labels: map[string]string{injector.DisableLabel: "disabled"}}},
	} {
		if _, err := r.kube.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating namespace %s: %v", ns.Name, err)
		}
	}
	// Its certificate names the loopback address too, since the API server calls it by URL; a
	// short refresh writes the CA into the webhook configuration at once.
	url := startInjector(t, r.kube, r.dir, "manifests/injector", "--host=127.0.0.1", "--refresh-interval=1s")
	r.kube.RegisterWebhook(t, testenv.Webhook{Config: testenv.InjectorWebhookConfig(t), URL: url})
	return r
}

// startInjector runs `sidecar injector` with the arguments of the injector's Deployment as the
// kustomization deploys it, and, after them, what differs outside a cluster: the config file's
// path (the ConfigMap's file), a loopback address, a kubeconfig, the namespace the downward API
// would give, and extra. It returns the webhook's URL.
func startInjector(t *testing.T, kube *testenv.Kube, dir, kustomization string, extra ...string) string {
	t.Helper()
	var c *corev1.Container
	for _, m := range testenv.Kustomize(t, filepath.Join(repoRoot(), kustomization)) {
		if d, ok := m.Object.(*appsv1.Deployment); ok && d.Name == "restate-grpc-injector" {
			c = &d.Spec.Template.Spec.Containers[0]
		}
	}
	if c == nil || len(c.Command) == 0 || c.Command[0] != injector.Binary {
		t.Fatalf("%s: want the Deployment restate-grpc-injector running %s, got container %+v", kustomization, injector.Binary, c)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: kube.Config.Host, CertificateAuthorityData: kube.Config.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: kube.Config.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin"}
	kc.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	args := append(c.Args, "--config="+filepath.Join(repoRoot(), "manifests/injector/base/config.yaml"),
		fmt.Sprintf("--listen=127.0.0.1:%d", port), "--kubeconfig="+kubeconfig, "--namespace="+injectorNS)
	cmd := exec.Command(filepath.Join(env.bin, "sidecar"), append(args, extra...)...)
	cmd.Env = cleanEnv()
	testenv.Start(t, "injector", cmd)
	return fmt.Sprintf("https://127.0.0.1:%d/mutate", port)
}

// serveHTTPS serves HTTPS in the orders pod, for the app's non-gRPC exchange.
func (r *kubeRig) serveHTTPS(t *testing.T) {
	cert, _ := selfSigned(t, "orders")
	r.caFile = filepath.Join(r.dir, "orders-ca.pem")
	if err := os.WriteFile(r.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			fmt.Fprintf(w, "orders https: %s %s", req.Method, req.URL.Path)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	go hs.ServeTLS(listenIn(t, r.net.Pod("orders"), httpsPort), "", "")
	t.Cleanup(func() { hs.Close() })
}

// pod is a pod of the shop namespace annotated for injection.
func pod(name string, ann map[string]string, containers ...corev1.Container) *corev1.Pod {
	a := map[string]string{injector.InjectAnnotation: "true"}
	for k, v := range ann {
		a["restate-grpc.io/"+k] = v
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: shopNS, Annotations: a},
		Spec:       corev1.PodSpec{Containers: containers, RestartPolicy: corev1.RestartPolicyNever},
	}
}

func (r *kubeRig) create(t *testing.T, p *corev1.Pod) (*corev1.Pod, error) {
	t.Helper()
	return r.kube.Client.CoreV1().Pods(p.Namespace).Create(testCtx(t), p, metav1.CreateOptions{})
}

// checkAdmission creates pods and a Deployment through the API and checks what the API server
// stored: the injector's webhook runs for the pods the configuration selects.
func (r *kubeRig) checkAdmission(t *testing.T) {
	app := corev1.Container{Name: "app", Image: checkoutImage}
	routes := map[string]string{"outbound": "routes: [{match: rgtest.v1.Echo/Call}]"}
	for _, tc := range []struct {
		name       string
		pod        *corev1.Pod
		wantStatus string // "" for a pod the webhook never saw
		wantErr    string
	}{
		{"injected", pod("plain", routes, app), injector.StatusInjected, ""},
		{"host network", func() *corev1.Pod { p := pod("host", routes, app); p.Spec.HostNetwork = true; return p }(),
			"skipped: the pod uses the host's network: interception would capture the node's own traffic", ""},
		{"bad annotations", pod("bad", map[string]string{"outbound": "routes: [{match: rgtest.v1.Echo/*, target: objekt}]", "interception": "sidecar"}, app), "",
			`admission webhook "inject.restate-grpc.io" denied the request: restate-grpc: restate-grpc.io/interception: "sidecar" is not one of explicit, proxy-env, iptables`},
		{"bad route", pod("badroute", map[string]string{"outbound": "routes: [{match: rgtest.v1.Echo/*, target: objekt}]"}, app), "",
			`admission webhook "inject.restate-grpc.io" denied the request: restate-grpc: restate-grpc.io/outbound: outbound.routes[0].target: "objekt" is not one of service, object, workflow`},
		{"not annotated", func() *corev1.Pod { p := pod("plainapp", nil, app); p.Annotations = nil; return p }(), "", ""},
		{"namespace labelled off", func() *corev1.Pod { p := pod("off", routes, app); p.Namespace = offNS; return p }(), "", ""},
		{"the injector's namespace", func() *corev1.Pod { p := pod("own", routes, app); p.Namespace = injectorNS; return p }(), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.create(t, tc.pod)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("creating the pod: got error %v, want one holding %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := got.Annotations[injector.StatusAnnotation]; s != tc.wantStatus {
				t.Errorf("stored status annotation %q, want %q", s, tc.wantStatus)
			}
			var names []string
			for _, c := range append(got.Spec.InitContainers, got.Spec.Containers...) {
				names = append(names, c.Name)
			}
			want := []string{"app"}
			if tc.wantStatus == injector.StatusInjected {
				want = []string{injector.SidecarName, "app"}
			}
			if d := cmp.Diff(want, names); d != "" {
				t.Errorf("stored containers (-want +got):\n%s", d)
			}
		})
	}

	t.Run("twice", func(t *testing.T) {
		// The pod as stored, injected and defaulted by the API server, created again: the
		// webhook sees its own work and changes nothing.
		first, err := r.kube.Client.CoreV1().Pods(shopNS).Get(testCtx(t), "plain", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		again := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain-again", Namespace: shopNS, Annotations: first.Annotations, Labels: first.Labels}, Spec: first.Spec}
		got, err := r.create(t, again)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(first.Spec, got.Spec); d != "" {
			t.Errorf("injecting an injected pod changed it (-first +again):\n%s", d)
		}
	})

	t.Run("deployment", func(t *testing.T) {
		// A Deployment is stored as sent (the webhook is for pods); the pod its ReplicaSet
		// makes from the template, created here as the controller would, is injected.
		tmpl := pod("", routes, app)
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: shopNS},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "checkout"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "checkout"}, Annotations: tmpl.Annotations},
					Spec:       corev1.PodSpec{Containers: tmpl.Spec.Containers},
				},
			},
		}
		stored, err := r.kube.Client.AppsV1().Deployments(shopNS).Create(testCtx(t), d, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(stored.Spec.Template.Spec.InitContainers); n != 0 {
			t.Errorf("the stored Deployment's template has %d init containers, want none", n)
		}
		p := &corev1.Pod{ObjectMeta: stored.Spec.Template.ObjectMeta, Spec: stored.Spec.Template.Spec}
		p.GenerateName, p.Namespace = "checkout-5d4f8-", shopNS
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "checkout-5d4f8", UID: "00000000-0000-0000-0000-000000000001"}}
		got, err := r.create(t, p)
		if err != nil {
			t.Fatal(err)
		}
		if s := got.Annotations[injector.StatusAnnotation]; s != injector.StatusInjected || got.Spec.InitContainers[0].Name != injector.SidecarName {
			t.Errorf("the Deployment's pod %s: status %q, init containers %d; want injected", got.Name, s, len(got.Spec.InitContainers))
		}
	})
}

// runOrders creates the callee's pod (the test app, its sidecar serving it to Restate as the
// annotations say) and runs it as stored; it returns once the sidecar has registered.
func (r *kubeRig) runOrders(t *testing.T) *testenv.PodRun {
	t.Helper()
	p := pod("orders", map[string]string{
		"interception": "explicit",
		"app-port":     "50051",
		"inbound":      "services: [{name: rgtest.v1.Echo}]",
	}, corev1.Container{Name: "orders", Image: ordersImage, Args: []string{"-listen=0.0.0.0:50051"}})
	stored, err := r.create(t, p)
	if err != nil {
		t.Fatal(err)
	}
	run := testenv.RunPod(t, context.Background(), r.net.Pod("orders"), stored, testenv.PodOptions{Images: r.images, ServiceEnv: r.serviceEnv()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run.WaitReady(ctx, injector.SidecarName); err != nil {
		t.Fatalf("the orders pod's sidecar is not ready (registered with Restate): %v\n%s", err, run.Output(injector.SidecarName))
	}
	return run
}

// serviceEnv is what the kubelet gives every container of the cluster: the API server's Service.
func (r *kubeRig) serviceEnv() map[string]string {
	return map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
}

// checkAppPod creates an app pod whose containers are unmodified clients in grpc-go, Python and
// Node, each dialing orders:50051 (a durable route and an unmatched call), and an HTTPS client
// fetching from orders:8444; runs the pod the API server stored (native or not, as the injector
// chose; not native: injected as `sidecar inject --kube-version 1.28` does); and checks each
// container's answers.
func (r *kubeRig) checkAppPod(t *testing.T, interception string, native bool) {
	text := uniq(t, "")
	ops := []string{"orders:50051", "unary:/rgtest.v1.Echo/Call:" + reqHex(t, text+"-durable"), "unary:/rgtest.v1.Counter/Get:" + reqHex(t, text+"-unmatched")}
	clients := []corev1.Container{
		{Name: "go", Image: checkoutImage, Command: []string{"/app/client"}, Args: ops},
		{Name: "python", Image: checkoutImage, Command: []string{"/usr/bin/python3", clientSource("client.py")}, Args: ops},
		{Name: "node", Image: checkoutImage, Command: []string{"node", clientSource("client.js")}, Args: ops},
		{Name: "https", Image: checkoutImage, Command: []string{"/usr/bin/python3", "-c",
			"import ssl, urllib.request; ctx = ssl.create_default_context(cafile='" + r.caFile + "');" +
				fmt.Sprintf(" print(urllib.request.urlopen('https://orders:%d/hello', context=ctx, timeout=20).read().decode())", httpsPort)}},
	}
	ann := map[string]string{"interception": interception, "outbound": "routes: [{match: rgtest.v1.Echo/Call}]"}
	netPod := "checkout-" + interception
	if interception == "iptables" {
		ann["outbound-ports"] = fmt.Sprintf("50051,%d", httpsPort)
	}
	p := pod(netPod, ann, clients...)
	if !native {
		netPod = "checkout-old"
		p.Name, p.Namespace = netPod, offNS
		// As `sidecar inject --kube-version 1.28` writes it, stored where the webhook does not
		// run (it would make the sidecar native on this API server): manual injection.
		injected, err := injector.New(r.cfg, injectorNS).Inject(p, injector.Target{Namespace: offNS, Native: false})
		if err != nil {
			t.Fatal(err)
		}
		p = injected
	}
	stored, err := r.create(t, p)
	if err != nil {
		t.Fatal(err)
	}
	if s := stored.Annotations[injector.StatusAnnotation]; s != injector.StatusInjected {
		t.Fatalf("stored status %q, want injected", s)
	}
	if got := stored.Spec.Containers[0].Name == injector.SidecarName; got == native {
		t.Fatalf("sidecar as containers[0]: %v, want %v (native sidecars: %v)", got, !native, native)
	}
	run := testenv.RunPod(t, context.Background(), r.net.Pod(netPod), stored, testenv.PodOptions{Images: r.images, ServiceEnv: r.serviceEnv()})
	defer run.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, c := range clients {
		t.Run(c.Name, func(t *testing.T) {
			code, err := run.Wait(ctx, c.Name)
			out := strings.TrimSpace(run.Output(c.Name))
			if err != nil || code != 0 {
				t.Fatalf("container %s: exit %d, %v; output:\n%s\nsidecar:\n%s", c.Name, code, err, out, run.Output(injector.SidecarName))
			}
			lines := strings.Split(out, "\n")
			if c.Name == "https" {
				if want := "orders https: GET /hello"; lines[len(lines)-1] != want {
					t.Errorf("the HTTPS client printed %q, want %q", out, want)
				}
				return
			}
			if len(lines) != 2 {
				t.Fatalf("client printed %q, want 2 lines", out)
			}
			id, resps := parseOK(t, lines[0])
			if !strings.HasPrefix(id, "inv_") || resps[0].GetText() != text+"-durable" || resps[0].GetInvocationId() != id {
				t.Errorf("durable call: id %q, answer %q with invocation id %q; want an inv_ id that orders saw, answer %q",
					id, resps[0].GetText(), resps[0].GetInvocationId(), text+"-durable")
			}
			id, resps = parseOK(t, lines[1])
			if id != "-" || resps[0].GetText() != text+"-unmatched" || resps[0].GetMetadata()[":authority"] != "orders:50051" {
				t.Errorf("unmatched call: id %q, answer %q, :authority %q; want no id, %q, orders:50051 (passed through)",
					id, resps[0].GetText(), resps[0].GetMetadata()[":authority"], text+"-unmatched")
			}
		})
	}
	if interception == "iptables" {
		t.Run("rules", func(t *testing.T) {
			out, err := r.net.Pod(netPod).Command(testCtx(t), 0, "iptables-save", "-t", "nat").CombinedOutput()
			if err != nil {
				t.Fatalf("iptables-save: %v\n%s", err, out)
			}
			for _, want := range []string{"-A RESTATE_GRPC_OUTPUT -p tcp -m tcp --dport 50051 -j REDIRECT --to-ports 15001", fmt.Sprintf("--dport %d -j REDIRECT", httpsPort)} {
				if !strings.Contains(string(out), want) {
					t.Errorf("the pod's nat rules lack %q:\n%s", want, out)
				}
			}
		})
	}
}

// checkExamples applies manifests/examples (the demo's orders and shop apps, annotated for
// injection) to the API server, creates the pod of each Deployment as its ReplicaSet would,
// runs both as stored, and reads the shop's log as the README's "verify" step does: its calls
// were answered through Restate (restate-invocation-id) by the orders app behind its sidecar.
func (r *kubeRig) checkExamples(t *testing.T) {
	ctx := testCtx(t)
	var deployments []*appsv1.Deployment
	for _, m := range testenv.Kustomize(t, filepath.Join(repoRoot(), "manifests/examples")) {
		var err error
		switch o := m.Object.(type) {
		case *corev1.Namespace:
			_, err = r.kube.Client.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Service:
			_, err = r.kube.Client.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *appsv1.Deployment:
			deployments = append(deployments, o)
			_, err = r.kube.Client.AppsV1().Deployments(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("manifests/examples has %s, which this test does not apply", m)
		}
		if err != nil {
			t.Fatalf("applying %s: %v", m, err)
		}
	}
	runs := map[string]*testenv.PodRun{}
	for _, d := range deployments { // orders first, as listed: the shop's route reads its reflection
		p := &corev1.Pod{ObjectMeta: d.Spec.Template.ObjectMeta, Spec: d.Spec.Template.Spec}
		p.GenerateName, p.Namespace = d.Name+"-7c9f5-", d.Namespace
		stored, err := r.create(t, p)
		if err != nil {
			t.Fatal(err)
		}
		if s := stored.Annotations[injector.StatusAnnotation]; s != injector.StatusInjected {
			t.Fatalf("%s's pod: status %q, want injected", d.Name, s)
		}
		run := testenv.RunPod(t, context.Background(), r.net.Pod("examples-"+d.Name), stored, testenv.PodOptions{Images: r.images, ServiceEnv: r.serviceEnv()})
		defer run.Stop()
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		err = run.WaitReady(wctx, injector.SidecarName)
		cancel()
		if err != nil {
			t.Fatalf("%s's sidecar is not ready: %v\n%s", d.Name, err, run.Output(injector.SidecarName))
		}
		runs[d.Name] = run
	}
	shop := runs["shop"]
	if shop == nil || runs["orders"] == nil {
		t.Fatalf("manifests/examples has Deployments %v, want orders and shop", runs)
	}
	// The tour's last step is the passthrough call; by then every durable step has answered.
	eventually(t, time.Minute, "the shop's tour to end", func() bool {
		return strings.Contains(shop.Output("shop"), "==> Passthrough") && strings.Contains(shop.Output("shop"), "health SERVING")
	})
	out := shop.Output("shop")
	if n := strings.Count(out, "restate-invocation-id=inv_"); n < 3 {
		t.Errorf("the shop's log shows %d answers with a restate-invocation-id, want the tour's durable calls:\n%s", n, out)
	}
	if strings.Contains(out, "shop: ") {
		t.Errorf("the shop's tour failed:\n%s", out)
	}
}

// TestKubernetesCertManager: the injector as manifests/injector/cert-manager deploys it serves
// the Secret cert-manager keeps (a serving certificate its CA Issuer signed, mounted the way the
// kubelet mounts a Secret), the API server trusts it through the caBundle cert-manager's CA
// injector writes, and a renewal, swapped in as the kubelet swaps it, is served without a
// restart and trusted the same.
func TestKubernetesCertManager(t *testing.T) {
	kube := testenv.SharedKube(t)
	ca := issue(t, nil, "restate-grpc-injector-ca")
	vol := newSecretVolume(t)
	serving := func() tls.Certificate { return issue(t, &ca, "restate-grpc-injector."+injectorNS+".svc", "127.0.0.1") }
	first := serving()
	vol.write(t, &ca, first)
	url := startInjector(t, kube, t.TempDir(), "manifests/injector/cert-manager", "--tls-cert-dir="+vol.dir)

	var mwc *admissionregistrationv1.MutatingWebhookConfiguration
	for _, m := range testenv.Kustomize(t, filepath.Join(repoRoot(), "manifests/injector/cert-manager")) {
		if o, ok := m.Object.(*admissionregistrationv1.MutatingWebhookConfiguration); ok {
			mwc = o
		}
	}
	if want := injectorNS + "/restate-grpc-injector"; mwc == nil || mwc.Annotations["cert-manager.io/inject-ca-from"] != want {
		t.Fatalf("manifests/injector/cert-manager: want a webhook configuration whose CA cert-manager injects from %s, got %+v", want, mwc)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate[0]})
	kube.RegisterWebhook(t, testenv.Webhook{Config: mwc, URL: url, CABundle: caPEM}) // returns once the API server calls it

	served := func() string {
		c, err := tls.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(url, "https://"), "/mutate"), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got := served(); got != first.Leaf.SerialNumber.String() {
		t.Fatalf("the injector serves serial %s, want the Secret's %s", got, first.Leaf.SerialNumber)
	}
	renewed := serving()
	vol.write(t, &ca, renewed)
	eventually(t, 30*time.Second, "the renewed certificate served", func() bool { return served() == renewed.Leaf.SerialNumber.String() })
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "after-renewal", Namespace: "restate-grpc-probe", Annotations: map[string]string{injector.InjectAnnotation: "true"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: checkoutImage}}},
	}
	got, err := kube.Client.CoreV1().Pods(p.Namespace).Create(testCtx(t), p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatalf("creating a pod after the renewal: %v", err)
	}
	if s := got.Annotations[injector.StatusAnnotation]; s != injector.StatusInjected {
		t.Errorf("a pod created after the renewal: status %q, want injected", s)
	}
}

// secretVolume is a Secret volume as the kubelet writes it: the files in a timestamped
// directory, ..data a symlink to it, each key a symlink through ..data, and an update a new
// directory swapped in with one rename of ..data.
type secretVolume struct {
	dir string
	n   int
}

func newSecretVolume(t *testing.T) *secretVolume { return &secretVolume{dir: t.TempDir()} }

func (v *secretVolume) write(t *testing.T, ca *tls.Certificate, c tls.Certificate) {
	t.Helper()
	key, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	v.n++
	ts := fmt.Sprintf("..2026_12_01_00_00_%02d.%d", v.n, v.n)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
		"ca.crt":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate[0]}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(v.dir, ts, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if v.n == 1 {
			if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}
