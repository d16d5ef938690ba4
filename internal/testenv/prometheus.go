package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PrometheusBinary finds a Prometheus tool (prometheus, promtool) on PATH: scripts/tools.sh
// installs Debian's prometheus package, which ships both.
func PrometheusBinary(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found: run scripts/tools.sh, or apt-get install -y prometheus (Debian's package has prometheus and promtool)", name)
	}
	return p, nil
}

// Prometheus is a running Prometheus server.
type Prometheus struct {
	URL string // http://127.0.0.1:port
}

// ScrapeInterval is how often StartPrometheus's server scrapes its targets.
const ScrapeInterval = 500 * time.Millisecond

// StartPrometheus runs a Prometheus server for the test that scrapes each target (job name
// to host:port, path /metrics) every ScrapeInterval, and stops it when the test ends. Its log
// is prometheus.log in the test's temporary directory, named when it fails to start.
func StartPrometheus(t *testing.T, targets map[string]string) *Prometheus {
	t.Helper()
	bin, err := PrometheusBinary("prometheus")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global: {scrape_interval: %s, scrape_timeout: %s}\nscrape_configs:\n", ScrapeInterval, ScrapeInterval)
	jobs := make([]string, 0, len(targets))
	for job := range targets {
		jobs = append(jobs, job)
	}
	sort.Strings(jobs)
	for _, job := range jobs {
		fmt.Fprintf(&cfg, "  - job_name: %q\n    static_configs: [{targets: [%q]}]\n", job, targets[job])
	}
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "prometheus.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the tests
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { terminate(cmd, exited); log.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := &Prometheus{URL: "http://" + addr}
	if err := waitHTTP(ctx, http.DefaultClient, p.URL+"/-/ready", exited); err != nil {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("prometheus (log %s): %v\n%s", logPath, err, b)
	}
	t.Logf("prometheus at %s, scraping %v (log %s)", p.URL, targets, logPath)
	return p
}

// Query evaluates a PromQL expression now through the HTTP API (/api/v1/query) and returns
// the value of each series of the instant vector it gives, by its labels (as name="value"
// pairs, sorted and comma-separated; "" for a series without labels).
func (p *Prometheus) Query(ctx context.Context, expr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status, Error string
		Data          struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %s: %s: %w", expr, resp.Status, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", expr, body.Error)
	}
	if body.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: a %s, not an instant vector", expr, body.Data.ResultType)
	}
	out := map[string]float64{}
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", expr, r.Value[1], err)
		}
		pairs := make([]string, 0, len(r.Metric))
		for k, v := range r.Metric {
			pairs = append(pairs, k+"="+strconv.Quote(v))
		}
		sort.Strings(pairs)
		out[strings.Join(pairs, ",")] = v
	}
	return out, nil
}
