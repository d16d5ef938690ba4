package testservice

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// Call is one executed call.
type Call struct {
	Method       string
	Key          string
	Text         string
	InvocationID string
	Metadata     metadata.MD
	Start, End   time.Time
}

// App implements Echo, Counter and Flow.
type App struct {
	testpb.UnimplementedEchoServer
	testpb.UnimplementedCounterServer
	testpb.UnimplementedFlowServer

	mu        sync.Mutex
	calls     []Call
	counters  map[string]int64
	inflight  map[string]int // per key
	overlaps  int            // times two calls of one Counter key ran at once
	seq       int64
	attempts  map[string]int32 // per invocation id
	noHistory bool
	running   map[string]int // by request text
	journal   io.Writer      // when set, every execution is appended as a line
}

// JournalTo appends a line "method invocation-id text" to w for every execution, as it
// starts, so executions can be counted across restarts of the app's process.
func (a *App) JournalTo(w io.Writer) {
	a.mu.Lock()
	a.journal = w
	a.mu.Unlock()
}

// KeepNoHistory stops recording calls, for benchmarks.
func (a *App) KeepNoHistory() {
	a.mu.Lock()
	a.noHistory = true
	a.mu.Unlock()
}

// NewApp returns an empty app.
func NewApp() *App {
	return &App{counters: map[string]int64{}, inflight: map[string]int{}, attempts: map[string]int32{}, running: map[string]int{}}
}

// Serve serves the app (with reflection and grpc-go's interop TestService) on l until the
// returned server is stopped.
func (a *App) Serve(l net.Listener) *grpc.Server {
	s := grpc.NewServer()
	testpb.RegisterEchoServer(s, a)
	testpb.RegisterCounterServer(s, a)
	testpb.RegisterFlowServer(s, a)
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	reflection.Register(s)
	go s.Serve(l)
	return s
}

// Calls returns the executed calls of method ("Echo/Call"), or all calls when method is "".
func (a *App) Calls(method string) []Call {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Call
	for _, c := range a.calls {
		if method == "" || c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

// CallsWithText returns the executed calls whose request text is text.
func (a *App) CallsWithText(text string) []Call {
	var out []Call
	for _, c := range a.Calls("") {
		if c.Text == text {
			out = append(out, c)
		}
	}
	return out
}

// Running reports whether a call with this request text is executing now.
func (a *App) Running(text string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running[text] > 0
}

// Overlaps is how often two calls of one Counter key ran at the same time.
func (a *App) Overlaps() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.overlaps
}

func (a *App) handle(ctx context.Context, method string, req *testpb.Req, key string, body func() int64) (*testpb.Resp, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	c := Call{Method: method, Key: key, Text: req.GetText(), Metadata: md, Start: time.Now()}
	if v := md.Get("restate-invocation-id"); len(v) > 0 {
		c.InvocationID = v[0]
	}
	a.mu.Lock()
	if a.noHistory {
		a.mu.Unlock()
		return &testpb.Resp{Text: req.GetText(), InvocationId: c.InvocationID}, nil
	}
	if a.journal != nil {
		fmt.Fprintf(a.journal, "%s %s %s\n", method, or(c.InvocationID, "-"), req.GetText())
	}
	a.running[req.GetText()]++
	a.attempts[c.InvocationID+"|"+req.GetText()]++
	attempt := a.attempts[c.InvocationID+"|"+req.GetText()]
	serial := strings.HasPrefix(method, "Counter/Add")
	if serial {
		a.inflight[key]++
		if a.inflight[key] > 1 {
			a.overlaps++
		}
	}
	a.mu.Unlock()
	defer func() {
		c.End = time.Now()
		a.mu.Lock()
		if serial {
			a.inflight[key]--
		}
		a.running[req.GetText()]--
		a.calls = append(a.calls, c)
		a.mu.Unlock()
	}()
	if req.GetSleepMs() > 0 {
		select {
		case <-time.After(time.Duration(req.GetSleepMs()) * time.Millisecond):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if req.GetFailCode() != 0 && (req.GetFailAttempts() == 0 || attempt <= req.GetFailAttempts()) {
		st := status.New(codes.Code(req.GetFailCode()), req.GetFailMessage())
		if req.GetFailDetails() {
			st, _ = st.WithDetails(&errdetails.ErrorInfo{Reason: "TEST_FAILURE", Domain: "rgtest.v1", Metadata: map[string]string{"key": key}})
		}
		return nil, st.Err()
	}
	resp := &testpb.Resp{Text: req.GetText(), InvocationId: c.InvocationID, Key: key, Metadata: flatten(md)}
	if d, ok := ctx.Deadline(); ok {
		resp.Metadata["x-deadline-left-ms"] = fmt.Sprint(time.Until(d).Milliseconds())
	}
	if body != nil {
		resp.Seq = body()
	} else {
		a.mu.Lock()
		a.seq++
		resp.Seq = a.seq
		a.mu.Unlock()
	}
	return resp, nil
}

func flatten(md metadata.MD) map[string]string {
	out := map[string]string{}
	for k, vs := range md {
		out[k] = strings.Join(vs, ",")
	}
	return out
}

func keyOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("restate-key"); len(v) > 0 {
		return v[0]
	}
	if v := md.Get("restate-key-bin"); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (a *App) Call(ctx context.Context, req *testpb.Req) (*testpb.Resp, error) {
	return a.handle(ctx, "Echo/Call", req, keyOf(ctx), nil)
}

func (a *App) Add(ctx context.Context, req *testpb.Req) (*testpb.Resp, error) {
	key := keyOf(ctx)
	return a.handle(ctx, "Counter/Add", req, key, func() int64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.counters[key]++
		return a.counters[key]
	})
}

func (a *App) Get(ctx context.Context, req *testpb.Req) (*testpb.Resp, error) {
	key := keyOf(ctx)
	return a.handle(ctx, "Counter/Get", req, key, func() int64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.counters[key]
	})
}

func (a *App) Run(ctx context.Context, req *testpb.Req) (*testpb.Resp, error) {
	return a.handle(ctx, "Flow/Run", req, keyOf(ctx), nil)
}

func (a *App) Status(ctx context.Context, req *testpb.Req) (*testpb.Resp, error) {
	return a.handle(ctx, "Flow/Status", req, keyOf(ctx), nil)
}

// ServerStream answers three messages.
func (a *App) ServerStream(req *testpb.Req, s grpc.ServerStreamingServer[testpb.Resp]) error {
	for i := range 3 {
		if err := s.Send(&testpb.Resp{Text: fmt.Sprintf("%s-%d", req.GetText(), i), Seq: int64(i)}); err != nil {
			return err
		}
	}
	return nil
}

// ClientStream answers the sorted, joined texts of the messages it got.
func (a *App) ClientStream(s grpc.ClientStreamingServer[testpb.Req, testpb.Resp]) error {
	var texts []string
	for {
		req, err := s.Recv()
		if err == io.EOF {
			sort.Strings(texts)
			return s.SendAndClose(&testpb.Resp{Text: strings.Join(texts, ","), Seq: int64(len(texts))})
		}
		if err != nil {
			return err
		}
		texts = append(texts, req.GetText())
	}
}

// Bidi echoes every message; a request with fail_code ends the stream with that status, and
// the header carries the caller's x-echo metadata back.
func (a *App) Bidi(s grpc.BidiStreamingServer[testpb.Req, testpb.Resp]) error {
	md, _ := metadata.FromIncomingContext(s.Context())
	s.SetHeader(metadata.Pairs("x-echo", strings.Join(md.Get("x-echo"), ",")))
	s.SetTrailer(metadata.Pairs("x-trailer", "bye"))
	for {
		req, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if req.GetFailCode() != 0 {
			return status.Error(codes.Code(req.GetFailCode()), req.GetFailMessage())
		}
		if err := s.Send(&testpb.Resp{Text: "echo:" + req.GetText()}); err != nil {
			return err
		}
	}
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
