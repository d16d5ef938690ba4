package manifests_test

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/restate-grpc/restate-grpc/internal/metrics"
	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

// TestAlertRules checks monitoring/alerts.yaml with promtool (check rules: it parses and its
// expressions are valid PromQL) and runs its unit tests (test rules: each alert fires where
// alerts_test.yaml says, and only there).
func TestAlertRules(t *testing.T) {
	promtool, err := testenv.PrometheusBinary("promtool")
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "monitoring"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestAlertRulesMetrics: the rules name only metrics the sidecar exports, so that a renamed
// metric cannot leave an alert that never fires.
func TestAlertRulesMetrics(t *testing.T) {
	b, err := os.ReadFile("monitoring/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	exported := []string{metrics.NameDurableCalls, metrics.NameDurableDuration + "_bucket", metrics.NameInFlight,
		metrics.NameSendsAccepted, metrics.NameReattaches, metrics.NameConnErrors, metrics.NameRefusedStreams,
		metrics.NamePeerCloses, metrics.NameCheckOK}
	used := regexp.MustCompile(`\brestate_grpc_[a-z_]+\b`).FindAllString(string(b), -1)
	if len(used) == 0 {
		t.Fatal("alerts.yaml names no restate_grpc_ metric")
	}
	for _, name := range used {
		if !slices.Contains(exported, name) && !strings.HasPrefix(name, "restate_grpc_route") {
			t.Errorf("alerts.yaml names %s, which the sidecar does not export (internal/metrics)", name)
		}
	}
}

// TestMonitoringConfigMap: the kustomization's ConfigMap holds alerts.yaml as it is.
func TestMonitoringConfigMap(t *testing.T) {
	want, err := os.ReadFile("monitoring/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cm := one[*corev1.ConfigMap](t, build(t, "monitoring"), "ConfigMap", "restate-grpc-alerts")
	if got := cm.Data["alerts.yaml"]; got != string(want) {
		t.Errorf("ConfigMap restate-grpc-alerts data[alerts.yaml] differs from monitoring/alerts.yaml:\n%s", got)
	}
	if cm.Namespace != "monitoring" {
		t.Errorf("ConfigMap namespace %q, want monitoring", cm.Namespace)
	}
}
