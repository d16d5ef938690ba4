package testenv_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	restate "github.com/restatedev/sdk-go"

	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

// TestCluster starts three nodes, registers a deployment through one node's admin API and calls
// it through every node's ingress; it finds the leaders, and a killed node's ingress refuses
// connections until it is restarted.
func TestCluster(t *testing.T) {
	c, err := testenv.StartCluster(t.TempDir(), testenv.ClusterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	if len(c.Nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(c.Nodes))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	uri, stop, err := testenv.ServeSDK(restate.NewService("echo.Echo").Handler("Say",
		restate.NewServiceHandler(func(ctx restate.Context, in []byte) ([]byte, error) {
			return append([]byte("echo "), in...), nil
		}, restate.WithBinary)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	if err := c.Register(ctx, uri, "echo.Echo"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if got, err := say(ctx, n.Ingress, n.Name); err != nil || got != "echo "+n.Name {
			t.Errorf("call through %s's ingress = %q, %v; want %q", n.Name, got, err, "echo "+n.Name)
		}
	}

	leader, err := c.MetadataLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaders, err := c.PartitionLeaders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leaders) != 4 {
		t.Errorf("partition leaders %v, want one for each of the 4 partitions", leaders)
	}
	t.Logf("metadata leader n%d, partition leaders %v", leader+1, leaders)

	// Kill a node other than the metadata leader: restatectl still answers through the others.
	victim := c.Nodes[(leader+1)%3]
	victim.Kill()
	if _, err := http.Get(victim.Ingress + "/restate/health"); err == nil {
		t.Errorf("%s's ingress answers after SIGKILL", victim.Name)
	}
	if got, err := c.MetadataLeader(ctx); err != nil || got == (leader+1)%3 {
		t.Errorf("metadata leader with %s killed = n%d, %v; want a live node", victim.Name, got+1, err)
	}
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	if !victim.Running() {
		t.Errorf("%s not running after Restart", victim.Name)
	}
	// A restarted node may not have loaded the schema at once (reference: ~0.5 s of 404).
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := say(ctx, victim.Ingress, "again")
		if err == nil && got == "echo again" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("call through restarted %s = %q, %v", victim.Name, got, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func say(ctx context.Context, ingress, text string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ingress+"/echo.Echo/Say", strings.NewReader(text))
	if err != nil {
		return "", err
	}
	req.Header.Set("content-type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), err
}
