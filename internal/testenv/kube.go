package testenv

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// KubeVersion is the kube-apiserver version scripts/kube.sh builds and the tests expect.
const KubeVersion = "v1.37.2"

// kubeAdvertiseAddress is what the API server advertises as its own address. It must not be a
// loopback address (kube-apiserver refuses those), and it is never dialled: the endpoint
// reconciler is off, so nothing publishes it, and clients use the loopback port.
const kubeAdvertiseAddress = "192.0.2.1"

// Kube is a running kube-apiserver on its own etcd, both on free loopback ports with their data
// in a temporary directory. There is no controller manager, scheduler or kubelet: objects are
// stored and go through admission (webhooks included), but nothing acts on them (a Deployment
// makes no Pods, a deleted Namespace stays Terminating).
type Kube struct {
	// Config reaches the API server as an admin (group system:masters).
	Config *rest.Config
	Client kubernetes.Interface
	// Version is what the server reports (/version).
	Version *version.Info
	// Dir holds etcd's data, the certificates and both logs.
	Dir string

	procs []*kubeProc
}

// kubeProc is one process the rig started; Stop ends exactly these.
type kubeProc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
}

// KubeAssets is the directory holding kube-apiserver and etcd: $RESTATE_GRPC_KUBE_ASSETS, or
// the cache scripts/kube.sh fills (outside the clone, so a fresh clone reuses a build).
func KubeAssets() string {
	if d := os.Getenv("RESTATE_GRPC_KUBE_ASSETS"); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "restate-grpc", "kube-"+strings.TrimPrefix(KubeVersion, "v"))
}

var shared struct {
	sync.Mutex
	kube *Kube
	err  error
}

// SharedKube is one API server for the whole test binary, started by the first test that asks
// (a start takes seconds; tests keep apart by namespace and object names). Its processes die with
// the test binary; StopSharedKube, from TestMain, also removes its directory (else the next start
// does). A failed start fails every test that asks, with the same error.
func SharedKube(t testing.TB) *Kube {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.kube == nil && shared.err == nil {
		shared.kube, shared.err = startKube()
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.kube
}

// StopSharedKube stops the API server SharedKube started, if any, and removes its directory.
func StopSharedKube() {
	shared.Lock()
	defer shared.Unlock()
	if shared.kube != nil {
		shared.kube.Stop()
		shared.kube = nil
	}
}

// StartKube starts an API server of the test's own, stopped when the test ends. Most tests
// want SharedKube.
func StartKube(t testing.TB) *Kube {
	t.Helper()
	k, err := startKube()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	return k
}

func startKube() (*Kube, error) {
	assets := KubeAssets()
	apiserver, etcd := filepath.Join(assets, "kube-apiserver"), filepath.Join(assets, "etcd")
	for _, bin := range []string{apiserver, etcd} {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("%s is missing: run scripts/kube.sh (it builds kube-apiserver %s and links etcd into %s; RESTATE_GRPC_KUBE_ASSETS overrides the directory)", bin, KubeVersion, assets)
		}
	}
	removeStaleKubeDirs()
	// The pid in the name lets a later run remove the directory if this binary never gets to.
	dir, err := os.MkdirTemp("", fmt.Sprintf("restate-grpc-kube-%d-", os.Getpid()))
	if err != nil {
		return nil, err
	}
	k := &Kube{Dir: dir}
	if err := k.start(apiserver, etcd); err != nil {
		k.Stop()
		return nil, err
	}
	return k, nil
}

// removeStaleKubeDirs removes the directories of rigs whose test binary has exited without
// stopping them (a test package using SharedKube without a TestMain that calls StopSharedKube, or
// a killed binary): etcd preallocates 64 MB of log in each.
func removeStaleKubeDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "restate-grpc-kube-*-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.Split(filepath.Base(d), "-")[3])
		if err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

func (k *Kube) start(apiserver, etcd string) error {
	ports := make([]int, 3) // etcd client, etcd peer, API server
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	if err := k.run("etcd", etcd,
		"--data-dir="+filepath.Join(k.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--unsafe-no-fsync", // a test's data need not survive a power cut; fsync is most of etcd's latency
	); err != nil {
		return err
	}

	ca, err := k.writeCerts()
	if err != nil {
		return err
	}
	token := rand.Text()
	// token,user,uid,"groups": system:masters passes every RBAC check.
	if err := os.WriteFile(filepath.Join(k.Dir, "tokens.csv"), []byte(token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		return err
	}
	if err := k.run("kube-apiserver", apiserver,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports[2]),
		"--advertise-address="+kubeAdvertiseAddress,
		// Publish no endpoints for the kubernetes Service: the advertised address serves nothing,
		// and tests reach the API server on its loopback port.
		"--endpoint-reconciler-type=none",
		"--tls-cert-file="+filepath.Join(k.Dir, "apiserver.crt"),
		"--tls-private-key-file="+filepath.Join(k.Dir, "apiserver.key"),
		"--token-auth-file="+filepath.Join(k.Dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+filepath.Join(k.Dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(k.Dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		// As clusters set up by kubeadm and kind do, so that a pod is refused here only for
		// what a real cluster would refuse.
		"--allow-privileged=true",
		// No controller manager creates the default ServiceAccount of a namespace, and this
		// plugin refuses pods until it exists.
		"--disable-admission-plugins=ServiceAccount",
	); err != nil {
		return err
	}

	k.Config = &rest.Config{
		Host:            fmt.Sprintf("https://127.0.0.1:%d", ports[2]),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		// The defaults (5 QPS) throttle a test that applies a few dozen objects.
		QPS: 200, Burst: 400,
	}
	if err := k.waitReady(); err != nil {
		return err
	}
	c, err := kubernetes.NewForConfig(k.Config)
	if err != nil {
		return err
	}
	k.Client = c
	if k.Version, err = c.Discovery().ServerVersion(); err != nil {
		return err
	}
	return nil
}

// run starts one process, its output in a log file of the rig's directory.
func (k *Kube) run(name, bin string, args ...string) error {
	log, err := os.Create(filepath.Join(k.Dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the tests
	if err := startOnSpawner(cmd); err != nil {
		log.Close()
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &kubeProc{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); log.Close(); close(p.exited) }()
	k.procs = append(k.procs, p)
	return nil
}

// spawner is a goroutine locked to an OS thread for good, which starts the rig's processes. The
// kernel sends Pdeathsig when the thread that forked a child ends, not the process; and Go ends
// a thread when a goroutine returns while locked to it, as InNetns does when it cannot move its
// thread back. A process forked from such a thread would die in the middle of a test.
var spawner = sync.OnceValue(func() chan<- func() {
	c := make(chan func())
	go func() {
		runtime.LockOSThread()
		for f := range c {
			f()
		}
	}()
	return c
})

func startOnSpawner(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	spawner() <- func() { errc <- cmd.Start() }
	return <-errc
}

// waitReady polls /readyz (which passes once the post-start hooks, RBAC's bootstrap roles
// among them, are done) until it answers 200, or fails naming the log of a process that died.
func (k *Kube) waitReady() error {
	tr, err := rest.TransportFor(k.Config)
	if err != nil {
		return err
	}
	c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		for _, p := range k.procs {
			select {
			case <-p.exited:
				return fmt.Errorf("%s exited while the API server started; its log: %s", p.name, k.logTail(p.name))
			default:
			}
		}
		resp, err := c.Get(k.Config.Host + "/readyz")
		if err == nil {
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, b.String())
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after 90s (%s); its log: %s", last, k.logTail("kube-apiserver"))
}

// logTail is the end of a process's log, for a failure message.
func (k *Kube) logTail(name string) string {
	b, err := os.ReadFile(filepath.Join(k.Dir, name+".log"))
	if err != nil {
		return err.Error()
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return fmt.Sprintf("%s\n%s", filepath.Join(k.Dir, name+".log"), b)
}

// Stop ends the API server, then etcd (SIGTERM, SIGKILL after 10s), only the processes this
// rig started, and removes its directory.
func (k *Kube) Stop() {
	for i := len(k.procs) - 1; i >= 0; i-- {
		terminate(k.procs[i].cmd, k.procs[i].exited)
	}
	k.procs = nil
	os.RemoveAll(k.Dir)
}

// writeCerts writes the API server's serving certificate (signed by a CA of its own, which it
// returns as PEM for clients) and the service-account signing key with its public half (which
// verifies tokens; kube-apiserver does not derive it from a PKCS#8 private key).
func (k *Kube) writeCerts() (caPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "restate-grpc test kube CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP(kubeAdvertiseAddress), net.IPv4(10, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{
		"ca.crt":        caPEM,
		"apiserver.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"sa.pub":        pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
	}
	for name, priv := range map[string]*ecdsa.PrivateKey{"apiserver.key": key, "sa.key": saKey} {
		b, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, err
		}
		files[name] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b})
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(k.Dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
}
