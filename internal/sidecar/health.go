package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// The checks /healthz and /readyz list.
const (
	CheckOutbound   = "outbound"   // the outbound listener serves
	CheckInbound    = "inbound"    // the inbound endpoint serves
	CheckRegistered = "registered" // the inbound deployment is registered with Restate
	CheckApp        = "app"        // the app answers
	CheckIngress    = "ingress"    // the Restate ingress answers
)

// probeTimeout bounds one probe of the app or the ingress: a kubelet's probe times out after
// a second by default, and the handlers must never wait on a probe anyway.
const probeTimeout = time.Second

// Check is the state of one check.
type Check struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Required checks decide /readyz; the others are shown only.
	Required bool   `json:"required"`
	Detail   string `json:"detail,omitempty"`
}

// Report is the body of /healthz and /readyz.
type Report struct {
	// Status is "ready" or "unready" for /readyz, "alive" for /healthz.
	Status string  `json:"status"`
	Checks []Check `json:"checks"`
}

// checks holds the current state of every check, in the order they were added.
type checks struct {
	mu   sync.Mutex
	list []Check
	// draining is set once the sidecar drains: a listener that starts serving late (the inbound
	// endpoint, once the app answered) must not make it ready again.
	draining bool
}

// add adds a failing check; its detail says what it waits for.
func (c *checks) add(name string, required bool, detail string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.list = append(c.list, Check{Name: name, Required: required, Detail: detail})
}

// set records a check's state and reports whether it changed.
func (c *checks) set(name string, ok bool, detail string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.list, func(ch Check) bool { return ch.Name == name })
	if i < 0 || c.draining && (name == CheckOutbound || name == CheckInbound) {
		return false // not configured, or drained for good
	}
	changed := c.list[i].OK != ok
	c.list[i].OK, c.list[i].Detail = ok, detail
	return changed
}

// drain fails the listeners' checks for good.
func (c *checks) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining = true
	for i, ch := range c.list {
		if ch.Name == CheckOutbound || ch.Name == CheckInbound {
			c.list[i].OK, c.list[i].Detail = false, "draining"
		}
	}
}

// report returns a copy of every check and whether all required ones pass.
func (c *checks) report() ([]Check, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ready := true
	for _, ch := range c.list {
		ready = ready && (ch.OK || !ch.Required)
	}
	return slices.Clone(c.list), ready
}

// probeApp asks the app for its health (grpc.health.v1). An app without that service still
// answered, which is all the inbound side needs of it.
func probeApp(ctx context.Context, app grpc.ClientConnInterface) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(app).Check(ctx, &healthpb.HealthCheckRequest{})
	switch {
	case status.Code(err) == codes.Unimplemented:
		return true, "answering (no grpc.health.v1 service)"
	case err != nil:
		return false, status.Convert(err).Message()
	case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		return false, "health status " + resp.GetStatus().String()
	}
	return true, "serving"
}

// probe is a check refreshed in the background.
type probe struct {
	name string
	run  func(context.Context) (bool, string)
	// changed, when set, is told of each change of state after the first result.
	changed func(ok bool, detail string)
}

// runProbes refreshes each probe every interval until ctx ends, first at once. The handlers
// read the last results: a probe of an app that hangs must not hold a kubelet's probe.
func (s *Sidecar) runProbes(ctx context.Context, interval time.Duration, probes []probe) {
	if len(probes) == 0 {
		return
	}
	s.goFn(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		first := true
		for {
			for _, p := range probes {
				ok, detail := p.run(ctx)
				if ctx.Err() != nil {
					return // a probe cut short says nothing of what it probed
				}
				if s.checks.set(p.name, ok, detail) && !first && p.changed != nil {
					p.changed(ok, detail)
				}
			}
			first = false
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

func (s *Sidecar) healthHandler() http.Handler {
	mux := http.NewServeMux()
	// Liveness: the process serves. Its checks are shown, but only a restart would help a
	// sidecar that does not answer at all, so none of them fails it.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		list, _ := s.checks.report()
		writeReport(w, s.log, http.StatusOK, Report{Status: "alive", Checks: list})
	})
	// The app may start once the outbound listener serves; the inbound side, which may need the
	// app itself (its reflection) before it registers, is not waited for. The injector's
	// startup probe, which holds the app's containers, asks this.
	mux.HandleFunc("GET /readyz/outbound", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		list, ready := s.checks.report()
		if !ready {
			writeReport(w, s.log, http.StatusServiceUnavailable, Report{Status: "unready", Checks: list})
			return
		}
		writeReport(w, s.log, http.StatusOK, Report{Status: "ready", Checks: list})
	})
	return mux
}

func writeReport(w http.ResponseWriter, log *slog.Logger, code int, r Report) {
	b, err := json.Marshal(r)
	if err != nil {
		log.Error("encoding the health report", "error", err) // a bug: Report always encodes
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
