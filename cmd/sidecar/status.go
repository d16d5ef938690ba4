package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/restate-grpc/restate-grpc/internal/metrics"
	"github.com/restate-grpc/restate-grpc/internal/sidecar"
)

// maxStatusBody bounds what status reads of each answer: a config, a report and a scrape of
// a sidecar are far smaller.
const maxStatusBody = 16 << 20

func statusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a running sidecar's readiness checks, effective config and per-route call counts",
		Long: `status asks a running sidecar's health port (--health) and prints:
  - its readiness, and each check /readyz lists (listeners, registration, app, ingress);
  - its effective config, defaults filled in, as /config serves it (bearer tokens redacted);
  - its durable calls since it started, by route, mode, target kind and gRPC status, read from
    its /metrics (restate_grpc_durable_calls_total), and the calls in flight per route.
It exits 1 when the sidecar cannot be reached; an unready sidecar is shown, not an error.
In a pod: kubectl exec POD -c restate-grpc -- sidecar status`,
		Args: cobra.NoArgs,
	}
	health := healthFlag(cmd)
	timeout := cmd.Flags().Duration("timeout", 5*time.Second, "how long to wait for the sidecar's answers")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, cancel := context.WithTimeout(cmd.Context(), *timeout)
		defer cancel()
		st, err := readStatus(ctx, "http://"+*health)
		if err != nil {
			return failed(err)
		}
		st.print(cmd.OutOrStdout(), *health)
		return nil
	}
	return cmd
}

// sidecarStatus is what status read from a sidecar.
type sidecarStatus struct {
	ready    sidecar.Report
	config   []byte // indented JSON
	routes   []metrics.RouteCounts
	inFlight map[string]float64 // by route
}

func readStatus(ctx context.Context, base string) (*sidecarStatus, error) {
	var st sidecarStatus
	b, err := get(ctx, base+"/readyz", http.StatusOK, http.StatusServiceUnavailable)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &st.ready); err != nil {
		return nil, fmt.Errorf("%s/readyz: %w", base, err)
	}
	if b, err = get(ctx, base+"/config", http.StatusOK); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "  ", "  "); err != nil {
		return nil, fmt.Errorf("%s/config: %w", base, err)
	}
	st.config = out.Bytes()
	if b, err = get(ctx, base+"/metrics", http.StatusOK); err != nil {
		return nil, err
	}
	samples, err := metrics.ReadText(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s/metrics: %w", base, err)
	}
	st.routes, st.inFlight = metrics.Routes(samples), metrics.InFlight(samples)
	return &st, nil
}

// get reads url, which must answer with one of the codes.
func get(ctx context.Context, url string, codes ...int) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the sidecar's health port does not answer (is --health its address?): %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusBody))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	for _, c := range codes {
		if resp.StatusCode == c {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%s: %s %s (a sidecar older than this command has no /config or /metrics)", url, resp.Status, strings.TrimSpace(string(b[:min(len(b), 200)])))
}

func (st *sidecarStatus) print(w io.Writer, addr string) {
	fmt.Fprintf(w, "sidecar at %s: %s\n\nchecks:\n", addr, st.ready.Status)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range st.ready.Checks {
		state, req := "fail", "optional"
		if c.OK {
			state = "ok"
		}
		if c.Required {
			req = "required"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Name, state, req, c.Detail)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nconfig:\n  %s\n\ndurable calls since start:\n", st.config)
	if len(st.routes) == 0 {
		fmt.Fprintln(w, "  none")
		return
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ROUTE\tMODE\tTARGET\tSTATUS\tCALLS\tIN FLIGHT")
	for _, r := range st.routes {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", r.Route, r.Mode, r.TargetKind, r.Status, count(r.Calls), count(st.inFlight[r.Route]))
	}
	tw.Flush()
}

func count(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
