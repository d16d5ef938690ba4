package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	restate "github.com/restatedev/sdk-go"
	"github.com/restatedev/sdk-go/server"
)

// ClusterOptions configure a Restate cluster.
type ClusterOptions struct {
	// Nodes is the number of nodes; default 3. Every node runs every role (ingress, admin,
	// worker, log server, metadata server).
	Nodes int
	// Partitions is default-num-partitions; default 4 (Restate's 24 is much for 2 cores).
	Partitions int
	// Identity makes the nodes sign their requests to deployments with one shared key;
	// Cluster.IdentityKey is then the public key deployments verify with.
	Identity bool
	// TracingEndpoint, when set, is every node's OTLP tracing endpoint (otlp+http://...).
	TracingEndpoint string
	// SharedPorts puts node i on loopback address 127.0.0.(i+1), every node on the same
	// ports, as the pods behind a Kubernetes headless Service: one name (resolved by a test's
	// resolver to those addresses) and one port reach them all.
	SharedPorts bool
}

// Cluster is a running Restate cluster on loopback ports: the configuration of
// ../shared/reference/restate-cluster.md, replication 2, every node a metadata member.
type Cluster struct {
	Nodes       []*ClusterNode
	IdentityKey string // publickeyv1_..., when Identity

	ctl        string // restatectl
	partitions int
}

// ClusterNode is one node of a Cluster. Kill, Restart, Stop and Pid are those of its server.
type ClusterNode struct {
	*Restate
	ID   int    // Restate's node id (force-node-id), 1 for Nodes[0]
	Name string // node-name, n1 for Nodes[0]
	Node string // the node (fabric) address, http://127.0.0.1:port, that restatectl and the other nodes use

	mu     sync.Mutex
	killed bool // by Kill or Stop, until Restart
}

// StartCluster starts a cluster in new base dirs under dir (one per node) and waits until
// every node's ingress and admin API answer.
func StartCluster(dir string, o ClusterOptions) (*Cluster, error) {
	return retryBind(dir, func(dir string) (*Cluster, error) { return startCluster(dir, o) })
}

func startCluster(dir string, o ClusterOptions) (*Cluster, error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Partitions == 0 {
		o.Partitions = 4
	}
	bin, err := RestateBinary()
	if err != nil {
		return nil, err
	}
	ctl, err := RestatectlBinary()
	if err != nil {
		return nil, err
	}
	c := &Cluster{ctl: ctl, partitions: o.Partitions}
	var keyFile string
	if o.Identity {
		keyFile = filepath.Join(dir, "identity.pem")
		if c.IdentityKey, err = writeIdentityKey(keyFile); err != nil {
			return nil, err
		}
	}
	hosts := make([]string, o.Nodes)
	for i := range hosts {
		hosts[i] = "127.0.0.1"
		if o.SharedPorts {
			hosts[i] = fmt.Sprintf("127.0.0.%d", i+1)
		}
	}
	ports := make([][3]int, o.Nodes) // node, ingress, admin
	var metadata []string
	for i := range ports {
		for j := range ports[i] {
			switch {
			case o.SharedPorts && i > 0:
				ports[i][j] = ports[0][j]
			case o.SharedPorts:
				if ports[i][j], err = freePortOn(hosts); err != nil {
					return nil, err
				}
			default:
				if ports[i][j], err = FreePort(); err != nil {
					return nil, err
				}
			}
		}
		metadata = append(metadata, fmt.Sprintf("%q", fmt.Sprintf("http://%s:%d/", hosts[i], ports[i][0])))
	}
	for i, p := range ports {
		h := hosts[i]
		n := &ClusterNode{ID: i + 1, Name: fmt.Sprintf("n%d", i+1), Node: fmt.Sprintf("http://%s:%d", h, p[0])}
		ndir := filepath.Join(dir, n.Name)
		if err := os.MkdirAll(ndir, 0o700); err != nil {
			return nil, err
		}
		// Memory limits are small: three nodes share a 2-core test machine with the tests.
		conf := fmt.Sprintf(`node-name = %q
force-node-id = %d
cluster-name = "rgcluster"
auto-provision = %t
default-num-partitions = %d
default-replication = 2
disable-telemetry = true
rocksdb-total-memory-size = "256 MiB"
bind-address = "%s:%d"
advertised-address = "%s/"
`, n.Name, n.ID, i == 0, o.Partitions, h, p[0], n.Node)
		if o.TracingEndpoint != "" {
			conf += fmt.Sprintf("tracing-endpoint = %q\n", o.TracingEndpoint)
		}
		conf += fmt.Sprintf(`[metadata-client]
addresses = [%s]
[admin]
bind-address = "%[2]s:%[3]d"
[admin.query-engine]
memory-size = "128 MiB"
[ingress]
bind-address = "%[2]s:%[4]d"
`, strings.Join(metadata, ", "), h, p[2], p[1])
		if keyFile != "" {
			conf += fmt.Sprintf("[worker.invoker]\nrequest-identity-private-key-pem-file = %q\n", keyFile)
		}
		r := &Restate{
			Ingress: fmt.Sprintf("http://%s:%d", h, p[1]), Admin: fmt.Sprintf("http://%s:%d", h, p[2]),
			IdentityKey: c.IdentityKey, bin: bin, dir: ndir, conf: filepath.Join(ndir, "restate.toml"),
			http: http.DefaultClient, args: []string{"--listen-mode", "tcp"},
		}
		if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		if r.logFile, err = os.Create(filepath.Join(ndir, "restate.log")); err != nil {
			return nil, err
		}
		n.Restate = r
		c.Nodes = append(c.Nodes, n)
	}
	// All at once: a node is healthy only once the metadata servers have a quorum.
	for _, n := range c.Nodes {
		if err := n.spawn(); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for _, n := range c.Nodes {
		if err := n.waitHealthy(); err != nil {
			c.Stop()
			return nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return c, nil
}

// freePortOn returns a port nobody listens on right now at any of hosts.
func freePortOn(hosts []string) (int, error) {
	for range 20 {
		p, err := FreePort()
		if err != nil {
			return 0, err
		}
		free := true
		for _, h := range hosts[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(p)))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no port free on all of %v", hosts)
}

// RestatectlBinary finds the pinned restatectl: $RESTATECTL_BIN, or the one scripts/tools.sh
// installed under the repository's .tools.
func RestatectlBinary() (string, error) {
	return npmBinary("RESTATECTL_BIN", "restatectl")
}

// Kill ends the node at once (SIGKILL), as a crash would.
func (n *ClusterNode) Kill() {
	n.mu.Lock()
	n.killed = true
	n.mu.Unlock()
	n.Restate.Kill()
}

// Stop ends the node (SIGTERM, then SIGKILL after 10s).
func (n *ClusterNode) Stop() {
	n.mu.Lock()
	n.killed = true
	n.mu.Unlock()
	n.Restate.Stop()
}

// Restart starts a killed or stopped node again on its ports and base dir and waits until its
// ingress and admin API answer (which does not mean it has loaded the schema yet).
func (n *ClusterNode) Restart() error {
	if err := n.Restate.Restart(); err != nil {
		return err
	}
	n.mu.Lock()
	n.killed = false
	n.mu.Unlock()
	return nil
}

// Running tells whether the node was started and not killed or stopped since.
func (n *ClusterNode) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.killed
}

// Ingresses are the nodes' ingress URLs, in node order.
func (c *Cluster) Ingresses() []string {
	var us []string
	for _, n := range c.Nodes {
		us = append(us, n.Ingress)
	}
	return us
}

// Admins are the nodes' admin API URLs, in node order.
func (c *Cluster) Admins() []string {
	var us []string
	for _, n := range c.Nodes {
		us = append(us, n.Admin)
	}
	return us
}

// Stop ends every node.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			wg.Go(n.Stop)
		}
	}
	wg.Wait()
}

// MetadataLeader is the index in Nodes of the metadata servers' Raft leader, as restatectl sees
// it. It waits until there is one that runs: after its node is killed, the others elect anew.
func (c *Cluster) MetadataLeader(ctx context.Context) (int, error) {
	for {
		i, err := c.metadataLeader(ctx)
		if err == nil && c.Nodes[i].Running() {
			return i, nil
		}
		if err == nil {
			err = fmt.Errorf("restatectl still names killed node %s", c.Nodes[i].Name)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("metadata leader: %w (%v)", err, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) metadataLeader(ctx context.Context) (int, error) {
	out, err := c.restatectl(ctx, "metadata-server", "list-servers")
	if err != nil {
		return 0, err
	}
	leader, err := metadataLeader(out)
	if err != nil {
		return 0, err
	}
	return c.index(leader)
}

// metadataLeader reads the LEADER column of `restatectl metadata-server list-servers`, from the
// first member that names one:
//
//	NODE  STATUS  VERSION  LEADER  MEMBERS     APPLIED ...
//	N1    Member  v3       N1      [N1,N2,N3]  29      ...
func metadataLeader(out string) (string, error) {
	col := -1
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if col < 0 {
			for i, h := range f {
				if h == "LEADER" && len(f) > 0 && f[0] == "NODE" {
					col = i
				}
			}
			continue
		}
		if len(f) > col && f[1] == "Member" && strings.HasPrefix(f[col], "N") {
			return f[col], nil
		}
	}
	return "", fmt.Errorf("no metadata leader in restatectl's list:\n%s", out)
}

// PartitionLeaders maps each partition id to the index in Nodes of its leader, as the
// partition processors report it (restatectl's partition_state table). It waits until every
// partition has one on a running node: after a start or a failover they are elected one by one.
func (c *Cluster) PartitionLeaders(ctx context.Context) (map[int]int, error) {
	for {
		leaders, err := c.partitionLeaders(ctx)
		if err == nil && len(leaders) == c.partitions {
			return leaders, nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("%d of %d partitions have a leader: %v", len(leaders), c.partitions, leaders)
			}
			return leaders, fmt.Errorf("partition leaders: %w (%v)", err, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) partitionLeaders(ctx context.Context) (map[int]int, error) {
	out, err := c.restatectl(ctx, "sql", "--json", "SELECT partition_id, gen_node_id FROM partition_state WHERE effective_mode = 'Leader'")
	if err != nil {
		return nil, err
	}
	var rows []struct {
		Partition int    `json:"partition_id"`
		Node      string `json:"gen_node_id"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		return nil, fmt.Errorf("restatectl sql: %v in %q", err, out)
	}
	leaders := map[int]int{}
	for _, r := range rows {
		i, err := c.index(r.Node)
		if err != nil {
			return nil, err
		}
		if c.Nodes[i].Running() { // a killed node's last report may linger
			leaders[r.Partition] = i
		}
	}
	return leaders, nil
}

// index maps a node id as restatectl prints it (N2, or N2:1 with a generation) to its index in Nodes.
func (c *Cluster) index(id string) (int, error) {
	plain, _, _ := strings.Cut(strings.TrimPrefix(id, "N"), ":")
	n, err := strconv.Atoi(plain)
	if err != nil || n < 1 || n > len(c.Nodes) {
		return 0, fmt.Errorf("node id %q is not one of this cluster's N1..N%d", id, len(c.Nodes))
	}
	return n - 1, nil
}

// restatectl runs restatectl against the running nodes' node addresses and returns its stdout.
func (c *Cluster) restatectl(ctx context.Context, args ...string) (string, error) {
	var addrs []string
	for _, n := range c.Nodes {
		if n.Running() {
			addrs = append(addrs, n.Node)
		}
	}
	if len(addrs) == 0 {
		return "", errors.New("no node of the cluster is running")
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.ctl, append([]string{"-s", strings.Join(addrs, ","), "--connect-timeout", "1000"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("restatectl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// Register registers the deployment at uri through the first running node's admin API and
// waits until every running node's ingress knows services: a node serves the schema a moment
// after another registered it.
func (c *Cluster) Register(ctx context.Context, uri string, services ...string) error {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		body := fmt.Sprintf(`{"uri":%q}`, uri)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.Admin+"/deployments", strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("registering %s with %s: %w", uri, n.Name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
			return fmt.Errorf("registering %s with %s: %s %s", uri, n.Name, resp.Status, b)
		}
		return c.WaitServices(ctx, services...)
	}
	return errors.New("no node of the cluster is running")
}

// WaitServices waits until every running node's ingress knows services. It asks for a handler
// no service has: "service not found" until the node has the schema, "handler not found"
// after, and no invocation either way.
func (c *Cluster) WaitServices(ctx context.Context, services ...string) error {
	for _, n := range c.Nodes {
		for _, svc := range services {
			for n.Running() {
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.Ingress+"/"+svc+"/NoSuchHandler", nil)
				if err != nil {
					return err
				}
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if !strings.Contains(string(b), "service '"+svc+"' not found") {
						break
					}
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("node %s does not know service %s: %w", n.Name, svc, ctx.Err())
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
	}
	return nil
}

// ServeSDK serves an sdk-go endpoint of defs on a loopback port (HTTP/1.1 and h2c, as Restate
// calls deployments) and returns its URI; stop ends it.
func ServeSDK(defs ...restate.ServiceDefinition) (uri string, stop func(), err error) {
	rs := server.NewRestate().WithLogger(slog.DiscardHandler, true)
	for _, d := range defs {
		rs = rs.Bind(d)
	}
	h, err := rs.Handler()
	if err != nil {
		return "", nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	return "http://" + l.Addr().String(), func() { srv.Close(); <-done }, nil
}
