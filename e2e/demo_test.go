package e2e

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

// TestDemo runs `make demo`'s script as a newcomer would and checks that every step happened.
func TestDemo(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "scripts/demo.sh")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`\[shop\] version 1  restate-status=Completed restate-invocation-id=inv_\w+\n`),
		regexp.MustCompile(`\(same answer, no new line from the orders app\)`),
		regexp.MustCompile(`pen-\d -> version 5`),
		regexp.MustCompile(`code=InvalidArgument message="quantity must be positive" details=\[field_violations:\{field:"item.quantity"`),
		regexp.MustCompile(`answered at once: restate-status=Accepted`),
		regexp.MustCompile(`Notify ada: "your parcel left"`),
		regexp.MustCompile(`second Run: AlreadyExists`),
		regexp.MustCompile(`Status \(shared handler\): paid`),
		regexp.MustCompile(`GetOrder order-\d+ \(restate-invocation-id=inv_\w+ restate-key=order-\d+ trace=4bf92f3577b34da6a3ce929d0e0e4736\)`),
		regexp.MustCompile(`health SERVING \(no restate headers: -\)`),
		regexp.MustCompile(`attached to inv_\w+: order version \d+ with 2 items`),
		regexp.MustCompile(`\n    invocation  inv_\w+\n    invocation  inv_\w+\n    payload     \d+ bytes\n`),
		regexp.MustCompile(`answered after [\d.]+s: version 1; nothing lost`),
	} {
		if !want.MatchString(text) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	// Each AddItem of the first order ran once: the retry with the idempotency key did not run.
	if n := strings.Count(text, "AddItem book x1"); n != 1 {
		t.Errorf("the orders app ran the idempotent AddItem %d times, want 1", n)
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
}
