package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/restate-grpc/restate-grpc/internal/soak"
)

// TestCluster runs both sidecars, as processes, against a 3-node Restate cluster (replication
// 2), with 16 callers making keyed calls and calls without a key (which the route's
// autoIdempotencyKey gives one of the sidecar's), and SIGKILLs nodes under that load: one node,
// once for each role (the metadata leader, a partition leader, the node the outbound sidecar
// uses; distinct nodes where the roles allow), restarted later; then two nodes at once, which
// loses the cluster's quorum. The figures of every run are printed (go test -v).
func TestCluster(t *testing.T) {
	ctx := context.Background()
	rig, err := soak.Start(ctx, soak.Options{Dir: t.TempDir(), Bin: env.bin, AutoKey: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rig.Stop)

	var killed []int
	for _, role := range []string{"metadata leader", "partition leader", "the outbound sidecar's node"} {
		t.Run("kill "+role, func(t *testing.T) {
			roles, err := rig.Roles(ctx)
			if err != nil {
				t.Fatal(err)
			}
			node := map[string]int{"metadata leader": roles.MetadataLeader, "partition leader": roles.PartitionLeader,
				"the outbound sidecar's node": roles.Used}[role]
			t.Logf("roles: %s; killing n%d", roles, node+1)
			if role == "the outbound sidecar's node" {
				conns, _ := rig.IngressConns()
				t.Logf("the outbound sidecar's connections to the ingresses n1..n%d: %v", len(conns), conns)
				if conns[node] == 0 {
					t.Errorf("n%d has no connection from the outbound sidecar: it is not a node the sidecar uses", node+1)
				}
			}
			killed = append(killed, node)
			rep := runWithFault(t, rig, soak.Load{Keyed: true, Unkeyed: true, Duration: 14 * time.Second, Work: 20 * time.Millisecond}, func() {
				time.Sleep(3 * time.Second)
				rig.Cluster.Nodes[node].Kill()
				time.Sleep(5 * time.Second)
				if err := rig.Cluster.Nodes[node].Restart(); err != nil {
					t.Errorf("restarting n%d: %v", node+1, err)
				}
			})
			for _, keyed := range []bool{true, false} {
				if n := rep.Lost(keyed); n != 0 {
					t.Errorf("lost %d %s calls", n, map[bool]string{true: "keyed", false: "unkeyed"}[keyed])
				}
			}
			if len(rep.Errors[true]) != 0 {
				t.Errorf("keyed calls' callers got errors %v, want none: the sidecar fails over", rep.Errors[true])
			}
		})
	}
	t.Logf("nodes killed, in order: n%d, n%d, n%d", killed[0]+1, killed[1]+1, killed[2]+1)

	t.Run("quorum lost", func(t *testing.T) {
		const attempt = 3 * time.Second
		a, b := rig.Cluster.Nodes[1], rig.Cluster.Nodes[2]
		rep := runWithFault(t, rig, soak.Load{Keyed: true, Duration: 16 * time.Second, Attempt: attempt, Work: 20 * time.Millisecond}, func() {
			time.Sleep(2 * time.Second)
			a.Kill()
			b.Kill()
			// Long enough that every caller meets the outage with several attempts.
			time.Sleep(8 * time.Second)
			if err := restartBoth(a.Restart, b.Restart); err != nil {
				t.Errorf("restarting n2 and n3: %v", err)
			}
		})
		if n := rep.Lost(true); n != 0 {
			t.Errorf("lost %d keyed calls: once both nodes are back every accepted call completes", n)
		}
		var errs int
		for code, n := range rep.Errors[true] {
			errs += n
			if code != codes.Unavailable && code != codes.DeadlineExceeded {
				t.Errorf("callers got %s %d times, want only UNAVAILABLE or DEADLINE_EXCEEDED", code, n)
			}
		}
		if errs == 0 {
			t.Errorf("no caller saw the quorum lost: the fault hit nothing")
		}
		// Within their deadline: an attempt ends at it (DEADLINE_EXCEEDED) or before.
		if rep.SlowestError > attempt+time.Second {
			t.Errorf("an attempt took %s to fail, past its deadline of %s", rep.SlowestError, attempt)
		}
	})
}

// restartBoth restarts two nodes at once: either waits for the other to be healthy.
func restartBoth(a, b func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- a() }()
	err := b()
	if e := <-errc; e != nil {
		return e
	}
	return err
}

// runWithFault runs the load with fault alongside, prints the figures, and fails the test on
// what must never happen (a call under two invocation ids, an answer without an execution).
func runWithFault(t *testing.T, rig *soak.Rig, l soak.Load, fault func()) *soak.Report {
	t.Helper()
	l.Prefix = uniq(t, "c")
	done := make(chan struct{})
	go func() { defer close(done); fault() }()
	st := rig.Run(context.Background(), l)
	<-done
	rep, err := rig.Report(st, l.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	// One line: the test command's summary shows the first line of a log.
	t.Logf("%s: %s", t.Name(), strings.ReplaceAll(rep.String(), "\n", "; "))
	for _, p := range rep.Problems() {
		t.Error(p)
	}
	return rep
}
