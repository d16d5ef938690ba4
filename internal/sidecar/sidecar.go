package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/restate-grpc/restate-grpc/api/invocationsv1"
	"github.com/restate-grpc/restate-grpc/interceptors"
	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/descriptors"
	"github.com/restate-grpc/restate-grpc/internal/durable"
	"github.com/restate-grpc/restate-grpc/internal/inbound"
	"github.com/restate-grpc/restate-grpc/internal/intercept"
	"github.com/restate-grpc/restate-grpc/internal/invocations"
	"github.com/restate-grpc/restate-grpc/internal/metrics"
	"github.com/restate-grpc/restate-grpc/internal/rawsock"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
	"github.com/restate-grpc/restate-grpc/tracing"
)

// Options configure a Sidecar.
type Options struct {
	Config *config.Config
	// Health is the address of /healthz, /readyz, /metrics and /config; empty disables them,
	// and the metrics with them.
	Health string
	// Listeners, where set, are served instead of binding the configured addresses: a caller
	// that needs the address before the sidecar starts (to put it in inbound.register.uri)
	// binds it itself, and nothing can take it in between.
	Listeners Listeners
	Logger    *slog.Logger
	// Version is the build, the service.version of the sidecar's spans.
	Version string
}

// Listeners are bound listeners for the sidecar's parts; nil ones are bound from the config.
type Listeners struct {
	Outbound, Inbound, Health net.Listener
}

// listen returns l, or a listener bound to addr.
func listen(l net.Listener, addr string) (net.Listener, error) {
	if l != nil {
		return l, nil
	}
	return net.Listen("tcp", addr)
}

// Sidecar is a running sidecar.
type Sidecar struct {
	ctx      context.Context
	cancel   context.CancelFunc
	log      *slog.Logger
	outbound net.Listener
	inbound  net.Listener
	health   net.Listener

	checks checks
	// grace bounds how long calls in flight may finish once ctx ends.
	grace time.Duration
	// interval is how often the app and the ingress are probed.
	interval time.Duration
	// outboundDrained and inboundDrained are called once each part has finished its calls
	// (or is not configured); drained is closed after both, once ctx has ended. The health
	// port and the connections the calls use outlive the drain.
	outboundDrained, inboundDrained func()
	drained                         chan struct{}
	wg                              sync.WaitGroup
	mu                              sync.Mutex
	errs                            []error
	tracing                         *tracing.Provider
	// metrics is nil without a health port: nothing would serve them.
	metrics *metrics.Registry
	// config is the effective config, as /config shows it with its secrets redacted.
	config *config.Config
}

// Start binds every listener (so a bad address fails here) and serves until ctx ends.
func Start(ctx context.Context, o Options) (*Sidecar, error) {
	s := &Sidecar{log: o.Logger, grace: o.Config.Shutdown.Grace.Std(), interval: o.Config.Health.CheckInterval.Std(), config: o.Config}
	if s.log == nil {
		s.log = slog.Default()
	}
	// A part that fails for good stops the whole sidecar: half a sidecar is worse than none.
	var err error
	if s.tracing, err = tracing.Setup(ctx, tracing.Options{Config: o.Config.Tracing, Version: o.Version}); err != nil {
		return nil, err
	}
	if s.tracing.TracerProvider() != nil {
		s.log.Info("exporting spans", "endpoint", s.tracing.Endpoint, "protocol", s.tracing.Protocol)
	}
	if o.Health != "" || o.Listeners.Health != nil {
		if s.metrics, err = metrics.New(); err != nil {
			return nil, err
		}
		if err := s.metrics.ObserveChecks(s.checkStates); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.ctx = ctx
	var drain sync.WaitGroup
	drain.Add(2)
	s.outboundDrained, s.inboundDrained = sync.OnceFunc(drain.Done), sync.OnceFunc(drain.Done)
	s.drained = make(chan struct{})
	s.goFn(func() {
		<-ctx.Done()
		// Unready at once: Kubernetes takes the pod out of its endpoints while calls drain.
		s.checks.drain()
		drain.Wait()
		close(s.drained)
	})
	closeAll := func() {
		s.cancel()
		s.tracing.Shutdown(context.Background()) // nothing was exported yet: only its exporter stops
		s.outboundDrained()
		s.inboundDrained()
		for _, l := range []net.Listener{s.outbound, s.inbound, s.health} {
			if l != nil {
				l.Close()
			}
		}
	}
	// Every listener is bound before any is served: the outbound one refuses CONNECTs to the
	// others, so it needs their addresses.
	oc, ic := o.Config.Outbound, o.Config.Inbound
	if oc != nil {
		if s.outbound, err = listen(o.Listeners.Outbound, oc.Listen); err != nil {
			return nil, fmt.Errorf("outbound listener: %w", err)
		}
	}
	if ic != nil {
		if s.inbound, err = listen(o.Listeners.Inbound, ic.Listen); err != nil {
			closeAll()
			return nil, fmt.Errorf("inbound listener: %w", err)
		}
		s.inbound = rawsock.Listener(s.inbound)
	}
	if o.Health != "" || o.Listeners.Health != nil {
		if s.health, err = listen(o.Listeners.Health, o.Health); err != nil {
			closeAll()
			return nil, fmt.Errorf("health listener: %w", err)
		}
	}
	s.addChecks(o.Config)
	if oc != nil {
		var own []net.Addr
		for _, l := range []net.Listener{s.inbound, s.health} {
			if l != nil {
				own = append(own, l.Addr())
			}
		}
		var also []net.Listener
		if l6 := s.loopback6(o.Listeners.Outbound); l6 != nil {
			also = append(also, rawsock.Listener(l6))
		}
		s.outbound = intercept.New(rawsock.Listener(s.outbound), intercept.Options{
			Also:          also,
			DetectTimeout: oc.DetectTimeout.Std(),
			MaxConns:      oc.Limits.MaxOpaqueConns,
			Self:          own,
			Allow:         oc.AllowsDestination,
			Logger:        s.log,
		})
		if err := s.startOutbound(ctx, oc); err != nil {
			closeAll()
			return nil, err
		}
	} else {
		s.outboundDrained()
	}
	if ic != nil {
		s.startInbound(ctx, ic)
	} else {
		s.inboundDrained()
	}
	if s.health != nil {
		// Probes still learn, while the calls drain, that the sidecar is going.
		s.serveHTTP(s.drained, "health", s.health, s.healthHandler(), nil)
	}
	return s, nil
}

// loopback6 binds the IPv6 loopback at the outbound listener's port when that listener is the
// IPv4 loopback and the sidecar bound it (not given): iptables mode redirects IPv6
// connections to [::1]. Nil where the host has no IPv6.
func (s *Sidecar) loopback6(given net.Listener) net.Listener {
	a, _ := s.outbound.Addr().(*net.TCPAddr)
	if given != nil || a == nil || !a.IP.Equal(net.IPv4(127, 0, 0, 1)) {
		return nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort("::1", strconv.Itoa(a.Port)))
	if err != nil {
		s.log.Debug("outbound listener on IPv4 only: IPv6 connections redirected by iptables will not reach it", "error", err)
		return nil
	}
	return l
}

// OutboundAddr is the outbound listener's address (nil without outbound).
func (s *Sidecar) OutboundAddr() net.Addr { return addr(s.outbound) }

// InboundAddr is the inbound endpoint's address (nil without inbound).
func (s *Sidecar) InboundAddr() net.Addr { return addr(s.inbound) }

// HealthAddr is the health port's address (nil without one).
func (s *Sidecar) HealthAddr() net.Addr { return addr(s.health) }

func addr(l net.Listener) net.Addr {
	if l == nil {
		return nil
	}
	return l.Addr()
}

// addChecks adds the checks of the configured parts, each failing until it has passed once.
func (s *Sidecar) addChecks(c *config.Config) {
	if oc := c.Outbound; oc != nil {
		s.checks.add(CheckOutbound, true, "starting")
		if len(oc.Ingress) > 0 {
			s.checks.add(CheckIngress, c.Health.RequireIngress, "not probed yet")
		}
	}
	if ic := c.Inbound; ic != nil {
		s.checks.add(CheckInbound, true, "reading the app's services")
		if ic.Register != nil {
			s.checks.add(CheckRegistered, true, "registering with "+ic.Register.Admin.String())
		}
		s.checks.add(CheckApp, true, "not probed yet")
	}
}

// Ready reports whether every required check passes: the listeners serve and, with an inbound
// side, the deployment is registered and the app answers.
func (s *Sidecar) Ready() bool {
	_, ready := s.checks.report()
	return ready
}

// Checks returns the state of every check, as /readyz lists them.
func (s *Sidecar) Checks() []Check {
	list, _ := s.checks.report()
	return list
}

// Wait blocks until every part has stopped and returns their errors.
func (s *Sidecar) Wait() error {
	s.wg.Wait()
	// Every call has ended: their spans are all there to flush.
	if err := s.tracing.Shutdown(context.Background()); err != nil {
		s.log.Warn("spans not exported", "error", err)
	}
	s.metrics.Shutdown(context.Background()) // a pull exporter: nothing is lost
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.errs...)
}

// Done is closed when the sidecar stops: its context ended, or a part failed for good.
func (s *Sidecar) Done() <-chan struct{} { return s.ctx.Done() }

func (s *Sidecar) fail(err error) {
	s.log.Error("sidecar part failed", "error", err)
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
	s.cancel()
}

// cut records that a part's calls outlived the grace period and were ended: the drain was
// not clean, which the exit code says.
func (s *Sidecar) cut(part string) {
	err := fmt.Errorf("%s: calls still in flight after the %s grace period were cut", part, s.grace)
	s.log.Warn(err.Error())
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
}

// goFn runs fn as a part of the sidecar: Wait waits for it.
func (s *Sidecar) goFn(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
}

func (s *Sidecar) startOutbound(ctx context.Context, oc *config.Outbound) error {
	po := durable.Options{Config: oc, Logger: s.log, Self: s.outbound.Addr().String(), Tracing: s.tracing.TracerProvider(),
		TraceKeys: s.tracing.RecordKeys(), Metrics: s.metrics}
	var mgmt *invocations.Server
	if len(oc.Ingress) > 0 {
		access, err := clientOptions(oc.Access, s.log)
		if err != nil {
			return fmt.Errorf("outbound.access: %w", err)
		}
		withLimit := access
		withLimit.MaxResponseBytes = oc.MaxMessageBytes
		c, err := restatehttp.NewClusterClient(oc.Ingress, withLimit)
		if err != nil {
			return err
		}
		po.Ingress = c
		s.runProbes(ctx, s.interval, []probe{{name: CheckIngress, run: func(ctx context.Context) (bool, string) {
			ctx, cancel := context.WithTimeout(ctx, probeTimeout)
			defer cancel()
			if err := c.Health(ctx); err != nil {
				s.metrics.IngressError()
				return false, err.Error()
			}
			return true, "answering at " + oc.Ingress.String()
		}, changed: func(ok bool, detail string) {
			if ok {
				s.log.Info("restate ingress reachable again", "ingress", oc.Ingress)
			} else {
				s.log.Warn("restate ingress unreachable", "ingress", oc.Ingress, "error", detail)
			}
		}}})
		var admin invocations.Admin // nil unless configured: Cancel and Kill then say how
		if len(oc.Admin) > 0 {
			a, err := restatehttp.NewClusterAdmin(oc.Admin, access)
			if err != nil {
				return err
			}
			po.Admin, admin = a, a
		}
		mgmt = invocations.NewServer(c, admin)
	}
	switch {
	case oc.Descriptors.File != "":
		f, err := descriptors.Load(oc.Descriptors.File)
		if err != nil {
			return fmt.Errorf("outbound.descriptors.file: %w", err)
		}
		po.Descriptors = f
	case oc.Descriptors.Reflection != "":
		conn, err := durable.DialPlaintext(oc.Descriptors.Reflection)
		if err != nil {
			return err
		}
		s.closeOnDrained(conn)
		po.Descriptors = descriptors.NewReflection(conn)
	}
	h, err := durable.New(po)
	if err != nil {
		return err
	}
	srv := durable.NewServer(h, func(r grpc.ServiceRegistrar) {
		if mgmt != nil {
			invocationsv1.RegisterInvocationsServer(r, mgmt)
		}
	}, s.log)
	s.log.Info("outbound listening", "addr", s.outbound.Addr().String(), "routes", len(oc.Routes), "unmatched", oc.Unmatched, "ingress", oc.Ingress)
	s.checks.set(CheckOutbound, true, "serving at "+s.outbound.Addr().String())
	s.goFn(func() {
		if err := srv.Serve(s.outbound); err != nil && !errors.Is(err, durable.ErrServerClosed) {
			s.fail(fmt.Errorf("outbound: %w", err))
		}
	})
	s.goFn(func() {
		<-ctx.Done()
		grace, cancel := context.WithTimeout(context.Background(), s.grace)
		defer cancel()
		if srv.Shutdown(grace) != nil {
			s.cut("outbound")
		}
		s.outboundDrained()
	})
	return nil
}

// closeOnDrained closes conn once the calls that may use it have drained.
func (s *Sidecar) closeOnDrained(conn *grpc.ClientConn) {
	s.goFn(func() { <-s.drained; conn.Close() })
}

// startInbound serves the endpoint once the app's services are known. The app may start after
// the sidecar (a native sidecar starts first), so resolving and registering retry until ctx ends.
func (s *Sidecar) startInbound(ctx context.Context, ic *config.Inbound) {
	// A panic below the app client fails that one attempt (Restate retries it), not the
	// sidecar; the app gets the caller's credentials, never the hop's to Restate.
	opts := append([]grpc.DialOption{grpc.WithChainUnaryInterceptor(interceptors.ClientRecovery(s.log), interceptors.AppMetadata(), s.countAppErrors)},
		s.metrics.DialOptions(ic.App)...)
	app, err := durable.DialPlaintext(ic.App, opts...)
	if err != nil {
		s.inboundDrained()
		s.fail(fmt.Errorf("inbound.app: %w", err))
		return
	}
	s.closeOnDrained(app)
	s.runProbes(ctx, s.interval, []probe{{name: CheckApp, run: func(ctx context.Context) (bool, string) { return probeApp(ctx, app) },
		changed: func(ok bool, detail string) {
			if ok {
				s.log.Info("app answering again", "app", ic.App)
			} else {
				s.log.Warn("app not answering; Restate retries its calls", "app", ic.App, "error", detail)
			}
		}}})
	s.goFn(func() {
		serving := false
		defer func() {
			if !serving {
				s.inboundDrained()
			}
		}()
		e, err := retry(ctx, s.log, "reading the app's services", func() (*inbound.Endpoint, error) {
			return inbound.New(ctx, inbound.Options{Config: ic, App: app, Descriptors: descriptors.NewReflection(app), Logger: s.log, Tracing: s.tracing.TracerProvider()})
		})
		if err != nil {
			if ctx.Err() == nil {
				s.fail(err)
			}
			s.inbound.Close()
			return
		}
		s.log.Info("inbound listening", "addr", s.inbound.Addr().String(), "app", ic.App, "version", e.Version())
		s.serveHTTP(ctx.Done(), "inbound", s.inbound, e, s.inboundDrained)
		serving = true
		s.checks.set(CheckInbound, true, "serving at "+s.inbound.Addr().String()+", version "+e.Version())
		if ic.Register == nil {
			return
		}
		access, err := clientOptions(ic.Register.Access, s.log)
		if err != nil {
			s.fail(fmt.Errorf("inbound.register.access: %w", err))
			return
		}
		admin, err := restatehttp.NewClusterAdmin(ic.Register.Admin, access)
		if err != nil {
			s.fail(err)
			return
		}
		s.keepRegistered(ctx, e, admin, ic.Register.URI)
	})
}

// keepRegistered registers e at uri, then checks every health.checkInterval that Restate still
// has the deployment, and registers it again when it was removed: until then the registered
// check fails, so /readyz, restate_grpc_check_ok and the RegistrationLost alert say so. An admin
// API that cannot answer leaves the check as it is: the deployment is not known to be gone.
func (s *Sidecar) keepRegistered(ctx context.Context, e *inbound.Endpoint, admin *restatehttp.Admin, uri string) {
	for {
		d, err := e.Register(ctx, admin, uri)
		if err != nil {
			if ctx.Err() == nil {
				s.fail(err)
			}
			return
		}
		s.checks.set(CheckRegistered, true, "deployment "+d.ID)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.interval):
			}
			has, err := admin.HasDeployment(ctx, d.ID)
			if err != nil {
				s.log.Debug("could not check the registration", "deployment", d.ID, "error", err)
				continue
			}
			if !has {
				break
			}
		}
		s.log.Warn("the deployment was removed from Restate; registering it again", "deployment", d.ID, "uri", uri)
		s.checks.set(CheckRegistered, false, "deployment "+d.ID+" was removed from Restate; registering again")
	}
}

// clientOptions turns configured access into client options. A token file is the client's to
// read, and to read again when it changes.
func clientOptions(a config.Access, log *slog.Logger) (restatehttp.Options, error) {
	return restatehttp.Options{BearerToken: a.BearerToken, BearerTokenFile: a.BearerTokenFile, CAFile: a.CAFile, Logger: log}, nil
}

// retry calls fn with backoff until it succeeds or ctx ends.
func retry[T any](ctx context.Context, log *slog.Logger, what string, fn func() (T, error)) (T, error) {
	backoff := 100 * time.Millisecond
	for {
		v, err := fn()
		if err == nil {
			return v, nil
		}
		log.Warn(what+" failed; retrying", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("%s: %w", what, err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// serveHTTP serves h on l until stop is closed, then lets its requests finish within the grace
// period and calls stopped, if set.
func (s *Sidecar) serveHTTP(stop <-chan struct{}, name string, l net.Listener, h http.Handler, stopped func()) {
	srv := inbound.NewHTTPServer(h)
	s.goFn(func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.fail(fmt.Errorf("%s: %w", name, err))
		}
	})
	s.goFn(func() {
		<-stop
		sctx, cancel := context.WithTimeout(context.Background(), s.grace)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
			s.cut(name)
		}
		if stopped != nil {
			stopped()
		}
	})
}
