// Command bench measures what the sidecar costs. It runs unary calls, one at a time and from 16
// and 64 concurrent callers, over these paths, all on this machine:
//
//	(a) direct         gRPC client -> app
//	(r) tcp relay      gRPC client -> a plain TCP relay -> app: the floor for a proxy there
//	(b) passthrough    gRPC client -> sidecar (no route) -> app
//	(c) Restate alone  HTTP client -> Restate ingress -> the sdk-go handler of (d) -> app
//	(s) c via a relay  HTTP client -> a plain TCP relay -> Restate ingress -> ... as (c)
//	(d) durable        gRPC client -> sidecar -> Restate -> sidecar (sdk-go handler) -> app
//	(e), (f)           (c) and (d) with the inbound service's fastPath (no Run step)
//	(n) native         HTTP client -> Restate ingress -> a native sdk-go handler, no app
//	(k) keyed          (c) with a unique idempotency key per call (keycost.go)
//
// and prints p50, p99, throughput and CPU per call for each, then the ratios b/a and b/r (what
// passthrough costs), d/c and f/e (what the outbound sidecar costs over calling Restate
// directly), s/c and d/s (what any proxy in its place costs, and the sidecar over that), and
// d/n, f/n (everything the sidecars add over a native Restate service), and k/c (what a
// sidecar-made key per call costs Restate). Every baseline is
// measured in the same run, in interleaved rounds.
// With -processes -against REV it also measures passthrough (B, with b) and durable (D, with
// d) calls through sidecars built at git revision REV, in the same rounds, and prints b/B and d/D: a change's
// effect, free of the run-to-run drift of this machine and of Restate. With -processes, the
// "sidecar cpu" column is the CPU per call of the path's own outbound sidecar process alone
// (b, d, f, B, D), and its ratio what a change costs the sidecar itself: the latency and
// throughput ratios also carry the app, the caller and Restate, which share this machine.
// Then it starts an outbound and an inbound sidecar process -startups times each (default 5)
// and prints the time from the exec to the first /readyz 200.
// Usage: go run ./cmd/bench [-processes [-against REV]] [-duration 10s] [-paths arbcsdefnk] [-conc 1,16,64] [-startups 5] [-trace-ratio 0.1]
package main

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	restate "github.com/restatedev/sdk-go"
	"github.com/restatedev/sdk-go/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/restate-grpc/restate-grpc/internal/inbound"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
	"github.com/restate-grpc/restate-grpc/internal/testenv"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

func main() {
	duration := flag.Duration("duration", 10*time.Second, "measuring time per path and concurrency, in ten rounds")
	warmup := flag.Duration("warmup", time.Second, "warm-up time per path and concurrency")
	only := flag.String("paths", "arbcsdefnk", "the paths to measure (ratios need both of their paths)")
	concs := flag.String("conc", "1,16,64", "the numbers of concurrent callers")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	processes := flag.Bool("processes", false, "run the app and each sidecar in its own process, as deployed (default: all in this process)")
	sidecarProcs := flag.Int("sidecar-procs", 0, "with -processes: the sidecars' -procs, the cores each runs on (default: the sidecar's default, 1)")
	against := flag.String("against", "", "with -processes: also measure passthrough (B, with b) and durable (D, with d) calls through sidecars built at this git revision, in the same rounds, and print b/B and d/D")
	flag.Parse()
	if *against != "" && !*processes {
		fmt.Fprintln(os.Stderr, "bench: -against needs -processes")
		os.Exit(2)
	}
	if v := os.Getenv("BENCH_GC"); v != "" {
		n, _ := strconv.Atoi(v)
		debug.SetGCPercent(n)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var levels []int
	for f := range strings.SplitSeq(*concs, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: -conc %q: want numbers above 0, comma-separated\n", *concs)
			os.Exit(2)
		}
		levels = append(levels, n)
	}
	o := options{duration: *duration, warmup: *warmup, paths: *only, levels: levels, processes: *processes, sidecarProcs: *sidecarProcs, against: *against}
	if o.against != "" {
		// b and d each bring their baseline, B and D at o.against.
		for _, p := range "bd" {
			if strings.ContainsRune(o.paths, p) {
				o.paths += strings.ToUpper(string(p))
			}
		}
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// caller makes one call.
type caller func(ctx context.Context) error

type result struct {
	path        string
	concurrency int
	p50, p99    time.Duration
	rps         float64
	errors      int
	// CPU per call of this process and the app's and sidecars' (when they run apart), and of
	// the Restate server.
	cpuSelf, cpuRestate time.Duration
	// cpuSidecar is the CPU per call of the path's own outbound sidecar, when it runs apart.
	cpuSidecar time.Duration
}

// options are the command's flags.
type options struct {
	duration, warmup time.Duration
	paths            string
	levels           []int
	processes        bool
	sidecarProcs     int
	against          string // a git revision
}

func run(o options) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "rg-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rs, err := testenv.StartRestate(dir, testenv.RestateOptions{})
	if err != nil {
		return err
	}
	defer rs.Stop()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// The native service of (n): the same work as the app, in this process.
	native := restate.NewService("bench.Native").Handler("Call", restate.NewServiceHandler(
		func(ctx restate.Context, in []byte) ([]byte, error) {
			var req testpb.Req
			if err := proto.Unmarshal(in, &req); err != nil {
				return nil, restate.TerminalErrorf("bad request: %v", err)
			}
			return proto.Marshal(&testpb.Resp{Text: req.GetText(), InvocationId: ctx.Request().ID})
		}, restate.WithCodec(inbound.Codec)))
	nh, err := server.NewRestate().WithLogger(quiet.Handler(), true).Bind(native).Handler()
	if err != nil {
		return err
	}
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ns := inbound.NewHTTPServer(nh)
	go ns.Serve(nl)
	defer ns.Close()
	admin, err := restatehttp.NewAdmin(rs.Admin, restatehttp.Options{})
	if err != nil {
		return err
	}
	if _, err := admin.Register(ctx, "http://"+nl.Addr().String()); err != nil {
		return err
	}

	spans, stopTracing, err := startTracing(*traceRatio)
	if err != nil {
		return err
	}
	defer stopTracing()

	// The app and the sidecars: in this process, or each in its own as deployed.
	var parts runner = &inProcess{ctx: ctx, log: quiet}
	var pr *processes
	if o.processes {
		if pr, err = newProcesses(dir, o.sidecarProcs, o.against); err != nil {
			return err
		}
		defer pr.stop()
		parts = pr
	}
	appAddr, err := parts.app()
	if err != nil {
		return err
	}
	relayAddr, err := parts.relay(appAddr)
	if err != nil {
		return err
	}
	ingressRelay, err := parts.relay(strings.TrimPrefix(rs.Ingress, "http://"))
	if err != nil {
		return err
	}
	// The inbound sidecar binds its port itself and registers it with Restate as it starts, so
	// the port is picked before.
	inAddr, err := freeAddr()
	if err != nil {
		return err
	}
	err = parts.sidecar(fmt.Sprintf(`
inbound:
  app: %s
  listen: %s
  register: {admin: %s, uri: "http://%[2]s"}
  services:
    - {name: rgtest.v1.Echo, handlers: {Call: ""}}
    - {name: rgtest.v1.Echo, as: rgtest.v1.EchoFast, handlers: {Call: ""}, fastPath: true}
`, appAddr, inAddr, rs.Admin))
	if err != nil {
		return err
	}
	durableYAML := func(listen string) string {
		return fmt.Sprintf(`
outbound:
  listen: %s
  ingress: %s
  routes: [{match: rgtest.v1.Echo/Call}]
`, listen, rs.Ingress)
	}
	fastYAML := func(listen string) string {
		return fmt.Sprintf(`
outbound:
  listen: %s
  ingress: %s
  routes: [{match: rgtest.v1.Echo/Call, service: rgtest.v1.EchoFast}]
`, listen, rs.Ingress)
	}
	passYAML := func(listen string) string {
		return fmt.Sprintf(`
outbound:
  listen: %s
  upstreams: {rgtest.v1.Echo: %s}
`, listen, appAddr)
	}
	outAddr, err := parts.outbound(durableYAML)
	if err != nil {
		return err
	}
	fastAddr, err := parts.outbound(fastYAML)
	if err != nil {
		return err
	}
	passAddr, err := parts.outbound(passYAML)
	if err != nil {
		return err
	}
	var outAt, passAt string // the sidecars built at o.against
	if o.against != "" {
		if outAt, err = pr.outboundAt(durableYAML); err != nil {
			return err
		}
		if passAt, err = pr.outboundAt(passYAML); err != nil {
			return err
		}
	}

	req := &testpb.Req{Text: strings.Repeat("x", 64)}
	// grpcCaller calls the Echo app at addr through a connection of its own, closed at the end.
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var dialErr error
	grpcCaller := func(addr string) caller {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			dialErr = cmp.Or(dialErr, err)
			return nil
		}
		conns = append(conns, c)
		client := testpb.NewEchoClient(c)
		return func(ctx context.Context) error { _, err := client.Call(ctx, req); return err }
	}
	body, _ := proto.Marshal(req)
	// The plain HTTP client: net/http as it comes (the sidecar's sockets are rawsock's), with
	// an idle pool as large as the sidecar's so that no caller waits for a connection.
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 1024, 512
	hc := &http.Client{Transport: t}
	httpCaller := func(base, path string) caller {
		return func(ctx context.Context) error { return post(ctx, hc, base+path, body) }
	}
	type path struct {
		name string
		call caller
		// sidecar is the pid of the outbound sidecar the path goes through alone, when it
		// runs apart (-processes), so that its own CPU per call is measured; else 0.
		sidecar int
	}
	paths := []path{
		{"a direct", grpcCaller(appAddr), 0},
		{"r tcp relay", grpcCaller(relayAddr), 0},
		{"b passthrough", grpcCaller(passAddr), parts.pidOf(passAddr)},
		{"c restate alone", httpCaller(rs.Ingress, "/rgtest.v1.Echo/Call"), 0},
		{"s alone, tcp relay", httpCaller("http://"+ingressRelay, "/rgtest.v1.Echo/Call"), 0},
		{"d durable", grpcCaller(outAddr), parts.pidOf(outAddr)},
		{"e alone, fastPath", httpCaller(rs.Ingress, "/rgtest.v1.EchoFast/Call"), 0},
		{"f durable, fastPath", grpcCaller(fastAddr), parts.pidOf(fastAddr)},
		{"n native", httpCaller(rs.Ingress, "/bench.Native/Call"), 0},
		{"k alone, unique key", keyedCaller(hc, rs.Ingress, "/rgtest.v1.Echo/Call", body, strconv.FormatInt(time.Now().UnixNano(), 36)), 0},
	}
	if o.against != "" {
		paths = append(paths, path{"B passthrough @" + o.against, grpcCaller(passAt), parts.pidOf(passAt)}, path{"D durable @" + o.against, grpcCaller(outAt), parts.pidOf(outAt)})
	}
	if dialErr != nil {
		return dialErr
	}
	where := "the app and the sidecars in the benchmark's process"
	if o.processes {
		where = "the app and each sidecar in its own process"
		if o.sidecarProcs > 0 {
			where += fmt.Sprintf(", the sidecars with -procs %d", o.sidecarProcs)
		} else {
			where += ", the sidecars on one core (-procs 1, their default)"
		}
	}
	fmt.Printf("machine: %s/%s, %d CPUs, %s; restate-server 1.7.12; %s per point after %s warm-up; %s\n\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), o.duration, o.warmup, where)
	fmt.Printf("%-24s %5s %10s %10s %10s %7s %12s %12s %12s\n", "path", "conc", "p50", "p99", "req/s", "errors", "cpu/call", "restate cpu", "sidecar cpu")
	// Paths are measured in interleaved rounds, so that a drift of the machine (frequency,
	// background work of the Restate server) hits each path and its baseline alike.
	const (
		rounds = 10
		settle = 50 * time.Millisecond
	)
	byKey := map[string]result{}
	for _, conc := range o.levels {
		samples := map[string]*sample{}
		for _, p := range paths {
			if strings.Contains(o.paths, p.name[:1]) {
				load(ctx, p.call, conc, o.warmup, parts.pids(), rs.Pid(), 0)
				samples[p.name] = &sample{}
			}
		}
		// Each round takes the paths in a new order, with a pause between them: a path
		// measured right after a busy one (passthrough, at thousands of calls a second) ran
		// 3-6% slower here than the same path measured elsewhere in the round.
		order := rand.New(rand.NewPCG(uint64(conc), 1))
		for range rounds {
			for _, i := range order.Perm(len(paths)) {
				if s := samples[paths[i].name]; s != nil {
					time.Sleep(settle)
					s.add(load(ctx, paths[i].call, conc, o.duration/rounds, parts.pids(), rs.Pid(), paths[i].sidecar))
				}
			}
		}
		for _, p := range paths {
			s := samples[p.name]
			if s == nil {
				continue
			}
			r := s.result()
			r.path, r.concurrency = p.name, conc
			byKey[fmt.Sprint(p.name[:1], conc)] = r
			fmt.Printf("%-24s %5d %10s %10s %10.0f %7d %12s %12s %12s\n", r.path, conc, ms(r.p50), ms(r.p99), r.rps, r.errors, ms(r.cpuSelf), ms(r.cpuRestate), us(r.cpuSidecar))
		}
	}
	fmt.Printf("\n%-22s %5s %10s %10s %12s %12s\n", "ratio", "conc", "p50", "p99", "throughput", "sidecar cpu")
	for _, pair := range [][2]string{{"r", "a"}, {"b", "a"}, {"b", "r"}, {"d", "c"}, {"s", "c"}, {"d", "s"}, {"b", "B"}, {"d", "D"}, {"f", "e"}, {"d", "n"}, {"f", "n"}, {"k", "c"}} {
		if !strings.Contains(o.paths, pair[0]) || !strings.Contains(o.paths, pair[1]) {
			continue
		}
		for _, conc := range o.levels {
			x, base := byKey[fmt.Sprint(pair[0], conc)], byKey[fmt.Sprint(pair[1], conc)]
			cpu := "-"
			if x.cpuSidecar > 0 && base.cpuSidecar > 0 {
				cpu = fmt.Sprintf("%.2f", float64(x.cpuSidecar)/float64(base.cpuSidecar))
			}
			fmt.Printf("%-22s %5d %10.2f %10.2f %12.2f %12s\n", pair[0]+"/"+pair[1], conc,
				float64(x.p50)/float64(base.p50), float64(x.p99)/float64(base.p99), x.rps/base.rps, cpu)
		}
	}
	if a, b := byKey["a1"], byKey["b1"]; a.p50 > 0 && b.p50 > 0 {
		fmt.Printf("\npassthrough adds %s at p50, concurrency 1\n", ms(b.p50-a.p50))
		if r := byKey["r1"]; r.p50 > 0 {
			fmt.Printf("a plain TCP relay in the same place adds %s: the floor for any proxy there\n", ms(r.p50-a.p50))
		}
	}
	if c, d := byKey["c1"], byKey["d1"]; c.p50 > 0 && d.p50 > 0 {
		fmt.Printf("the outbound sidecar adds %s at p50, concurrency 1, over calling Restate directly\n", ms(d.p50-c.p50))
		if s := byKey["s1"]; s.p50 > 0 {
			fmt.Printf("a plain TCP relay in its place adds %s: the floor for any proxy there\n", ms(s.p50-c.p50))
		}
	}
	if n, d := byKey["n1"], byKey["d1"]; n.p50 > 0 && d.p50 > 0 {
		fmt.Printf("both sidecars and the app's gRPC hop add %s at p50, concurrency 1, over a native service\n", ms(d.p50-n.p50))
	}
	printTargets(byKey, o.levels)
	fmt.Printf("\n%s\n", spans())
	return printStartup(*startups, dir, appAddr, rs)
}

// printTargets judges the results by the targets of issue 2, for the paths measured.
func printTargets(byKey map[string]result, levels []int) {
	verdict := func(ok bool) string { return map[bool]string{true: "met", false: "MISSED"}[ok] }
	fmt.Println("\ntargets (issue 2)")
	for _, conc := range levels {
		c, d := byKey[fmt.Sprint("c", conc)], byKey[fmt.Sprint("d", conc)]
		if c.p50 == 0 || d.p50 == 0 {
			continue
		}
		lat, thr := float64(d.p50)/float64(c.p50), d.rps/c.rps
		fmt.Printf("  concurrency %-3d d/c p50 %.2f (at most 1.10): %-6s  d/c throughput %.2f (at least 0.90): %s\n",
			conc, lat, verdict(lat <= 1.10), thr, verdict(thr >= 0.90))
	}
	if a, b := byKey["a1"], byKey["b1"]; a.p50 > 0 && b.p50 > 0 {
		add := b.p50 - a.p50
		fmt.Printf("  concurrency 1   passthrough adds %s (at most 0.100 ms): %s\n", ms(add), verdict(add <= 100*time.Microsecond))
	}
}

// sample accumulates the latencies of several rounds.
type sample struct {
	lat                 []time.Duration
	elapsed             time.Duration
	errors              int
	cpuSelf, cpuRestate time.Duration
	cpuSidecar          time.Duration
}

func (s *sample) add(o *sample) {
	s.lat = append(s.lat, o.lat...)
	s.elapsed += o.elapsed
	s.errors += o.errors
	s.cpuSelf += o.cpuSelf
	s.cpuRestate += o.cpuRestate
	s.cpuSidecar += o.cpuSidecar
}

func (s *sample) result() result {
	slices.Sort(s.lat)
	r := result{errors: s.errors, rps: float64(len(s.lat)) / s.elapsed.Seconds()}
	if n := len(s.lat); n > 0 {
		r.p50 = s.lat[n*50/100]
		r.p99 = s.lat[n*99/100]
		r.cpuSelf = s.cpuSelf / time.Duration(n)
		r.cpuRestate = s.cpuRestate / time.Duration(n)
		r.cpuSidecar = s.cpuSidecar / time.Duration(n)
	}
	return r
}

// cpuTimes returns the CPU time used so far by this process plus the processes parts, and by
// the process restate.
func cpuTimes(parts []int, restate int) (self, other time.Duration) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for _, pid := range parts {
		self += procCPU(pid)
	}
	return self, procCPU(restate)
}

// procCPU reads a process's CPU time from /proc: utime and stime, the 12th and 13th fields
// after the command name (which may hold spaces), in clock ticks of 1/100 s.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// load runs call from conc callers for d; parts and restate are the pids whose CPU it counts,
// and sidecar, when not 0, the path's own sidecar, whose CPU it also counts apart.
func load(ctx context.Context, call caller, conc int, d time.Duration, parts []int, restate, sidecar int) *sample {
	var mu sync.Mutex
	s := &sample{}
	deadline := time.Now().Add(d)
	self0, restate0 := cpuTimes(parts, restate)
	sidecar0 := procCPU(sidecar)
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			var mine []time.Duration
			bad := 0
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := call(ctx); err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			s.lat = append(s.lat, mine...)
			s.errors += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	s.elapsed = time.Since(start)
	self1, restate1 := cpuTimes(parts, restate)
	s.cpuSelf, s.cpuRestate = self1-self0, restate1-restate0
	if sidecar != 0 {
		s.cpuSidecar = procCPU(sidecar) - sidecar0
	}
	return s
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d.Microseconds())/1000) }

// us prints a sidecar's CPU per call, a few microseconds; "-" when it was not measured.
func us(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f µs", float64(d.Nanoseconds())/1000)
}

// post sends body to url as application/proto and reads the answer.
func post(ctx context.Context, hc *http.Client, url string, body []byte) error {
	return postHeader(ctx, hc, url, body, nil)
}

// postHeader is post with these headers added.
func postHeader(ctx context.Context, hc *http.Client, url string, body []byte, h http.Header) error {
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, v := range h {
		r.Header[k] = v
	}
	r.Header.Set("Content-Type", "application/proto")
	resp, err := hc.Do(r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	return nil
}
