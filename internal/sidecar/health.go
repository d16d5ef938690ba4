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

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/metrics"
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

// checkStates is the state of every check, for the metrics.
func (s *Sidecar) checkStates() []metrics.Check {
	list, _ := s.checks.report()
	out := make([]metrics.Check, len(list))
	for i, c := range list {
		out[i] = metrics.Check{Name: c.Name, OK: c.OK}
	}
	return out
}

// countAppErrors counts the calls to the app (Restate's attempts and the probes) that did not
// reach it: UNAVAILABLE is what grpc-go makes of a connection that fails.
func (s *Sidecar) countAppErrors(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoke grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoke(ctx, method, req, reply, cc, opts...)
	if err != nil && status.Code(err) == codes.Unavailable {
		s.metrics.AppError()
	}
	return err
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
		writeJSON(w, s.log, http.StatusOK, Report{Status: "alive", Checks: list})
	})
	// The app may start once the outbound listener serves; the inbound side, which may need the
	// app itself (its reflection) before it registers, is not waited for. The injector's
	// startup probe, which holds the app's containers, asks this.
	mux.HandleFunc("GET /readyz/outbound", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		list, ready := s.checks.report()
		if !ready {
			writeJSON(w, s.log, http.StatusServiceUnavailable, Report{Status: "unready", Checks: list})
			return
		}
		writeJSON(w, s.log, http.StatusOK, Report{Status: "ready", Checks: list})
	})
	mux.Handle("GET /metrics", s.metrics.Handler())
	// The effective config (defaults filled in), for `sidecar status`; the health port is the
	// pod's, so tokens are never shown.
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, s.log, http.StatusOK, Redacted(s.config))
	})
	return mux
}

// redactedValue replaces a secret in Redacted's copy.
const redactedValue = "REDACTED"

// Redacted returns a copy of c without its secrets: the bearer tokens (their files' paths
// stay, they say where the token comes from).
func Redacted(c *config.Config) *config.Config {
	r := *c
	redact := func(a *config.Access) {
		if a.BearerToken != "" {
			a.BearerToken = redactedValue
		}
	}
	if c.Outbound != nil {
		o := *c.Outbound
		redact(&o.Access)
		r.Outbound = &o
	}
	if c.Inbound != nil && c.Inbound.Register != nil {
		in, reg := *c.Inbound, *c.Inbound.Register
		redact(&reg.Access)
		in.Register = &reg
		r.Inbound = &in
	}
	return &r
}

// writeJSON writes v, a report or the config, which always encode.
func writeJSON(w http.ResponseWriter, log *slog.Logger, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		log.Error("encoding a health port answer", "error", err) // a bug
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
