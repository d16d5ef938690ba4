package soak

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// IngressConns counts the established TCP connections to each node's ingress (in node order),
// from /proc/net/tcp: only the outbound sidecar calls the ingresses, so the node with the most
// is the one it is using.
func (r *Rig) IngressConns() ([]int, error) {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return nil, err
	}
	ports := map[int]int{} // port -> node index
	for i, u := range r.Cluster.Ingresses() {
		pu, err := url.Parse(u)
		if err != nil {
			return nil, err
		}
		p, _ := strconv.Atoi(pu.Port())
		ports[p] = i
	}
	out := make([]int, len(r.Cluster.Nodes))
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		// sl local_address rem_address st ...; addresses are hex IP:port, st 01 is ESTABLISHED.
		if len(f) < 4 || f[3] != "01" {
			continue
		}
		_, port, ok := strings.Cut(f[2], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseInt(port, 16, 32)
		if err != nil {
			continue
		}
		if i, ok := ports[int(p)]; ok {
			out[i]++
		}
	}
	return out, nil
}

// Roles are the nodes (indexes in Cluster.Nodes) that a kill test picks from.
type Roles struct {
	MetadataLeader int
	// PartitionLeader leads the most partitions, preferring a node other than the metadata
	// leader.
	PartitionLeader int
	// Used is the node with the most connections from the outbound sidecar, preferring one
	// that is neither of the others.
	Used int
}

// Roles asks the cluster for its leaders and /proc for the sidecar's connections. Right after
// a restart the leaders may not be known yet: it asks again for up to 30s.
func (r *Rig) Roles(ctx context.Context) (Roles, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ro, err := r.roles(ctx)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return ro, err
		}
		time.Sleep(time.Second)
	}
}

func (r *Rig) roles(ctx context.Context) (Roles, error) {
	var ro Roles
	var err error
	if ro.MetadataLeader, err = r.Cluster.MetadataLeader(ctx); err != nil {
		return ro, err
	}
	leaders, err := r.Cluster.PartitionLeaders(ctx)
	if err != nil {
		return ro, err
	}
	led := make([]int, len(r.Cluster.Nodes))
	for _, n := range leaders {
		led[n]++
	}
	ro.PartitionLeader = pick(led, ro.MetadataLeader)
	conns, err := r.IngressConns()
	if err != nil {
		return ro, err
	}
	ro.Used = pick(conns, ro.MetadataLeader, ro.PartitionLeader)
	return ro, nil
}

// pick returns the index with the highest count above 0 that is not in avoid, else the highest
// count's.
func pick(counts []int, avoid ...int) int {
	best, bestFree := 0, -1
	for i, c := range counts {
		if c > counts[best] {
			best = i
		}
		free := c > 0
		for _, a := range avoid {
			free = free && i != a
		}
		if free && (bestFree < 0 || c > counts[bestFree]) {
			bestFree = i
		}
	}
	if bestFree >= 0 {
		return bestFree
	}
	return best
}

func (ro Roles) String() string {
	return fmt.Sprintf("metadata leader n%d, partition leader n%d, the outbound sidecar's node n%d", ro.MetadataLeader+1, ro.PartitionLeader+1, ro.Used+1)
}
