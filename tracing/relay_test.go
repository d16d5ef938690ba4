package tracing

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
)

// TestRelay: a relayed stream's span, made later from its record with the sidecar's tracer
// or at once with any other, has the ids the upstream was told of, its parent, its times and
// the attributes and status of how it ended.
func TestRelay(t *testing.T) {
	type tracerFunc func(*testing.T) (_ trace.Tracer, _ *tracetest.SpanRecorder, flush func() error)
	var own tracerFunc = func(t *testing.T) (trace.Tracer, *tracetest.SpanRecorder, func() error) {
		rec := tracetest.NewSpanRecorder()
		tp := newTracerProvider(ratioSampler(true, 1), sdktrace.WithSpanProcessor(rec))
		t.Cleanup(func() { tp.Shutdown(context.Background()) })
		return Tracer(tp), rec, func() error { return tp.ForceFlush(context.Background()) }
	}
	var sdk tracerFunc = func(t *testing.T) (trace.Tracer, *tracetest.SpanRecorder, func() error) {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		t.Cleanup(func() { tp.Shutdown(context.Background()) })
		return Tracer(tp), rec, func() error { return nil } // the recorder has each span as it ends
	}
	tests := []struct {
		name       string
		tracer     tracerFunc
		parent     bool
		end        func(*Relay)
		wantAttrs  map[string]string
		wantStatus string // the error status's description; "" for none
	}{
		{name: "sidecar's, ok", tracer: own, parent: true, end: func(r *Relay) { r.End(codes.OK) },
			wantAttrs: map[string]string{"rpc.system": "grpc", "rpc.service": "a.v1.B", "rpc.method": "C", "rpc.grpc.status_code": "0",
				"restate_grpc.mode": "passthrough", "server.address": "10.0.0.1:50051"}},
		{name: "sidecar's, failed, root", tracer: own, end: func(r *Relay) { r.End(codes.NotFound) },
			wantAttrs: map[string]string{"rpc.grpc.status_code": "5"}, wantStatus: "NotFound"},
		{name: "sidecar's, reset", tracer: own, parent: true, end: func(r *Relay) { r.Reset("stream reset: CANCEL") },
			wantAttrs: map[string]string{"rpc.grpc.status_code": "", "restate_grpc.mode": "passthrough"}, wantStatus: "stream reset: CANCEL"},
		{name: "sdk's, failed", tracer: sdk, parent: true, end: func(r *Relay) { r.End(codes.Unavailable) },
			wantAttrs: map[string]string{"rpc.method": "C", "rpc.grpc.status_code": "14", "server.address": "10.0.0.1:50051"}, wantStatus: "Unavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, rec, flush := tc.tracer(t)
			ctx := context.Background()
			if tc.parent {
				ctx = remoteParent(true)
			}
			before := time.Now()
			r := StartRelay(ctx, tr, "/a.v1.B/C", "10.0.0.1:50051")
			if r == nil {
				t.Fatal("not sampled at ratio 1")
			}
			sc := r.SpanContext()
			if !sc.IsValid() || !sc.IsSampled() {
				t.Fatalf("span context %v, want a valid, sampled one", sc)
			}
			tc.end(r)
			after := time.Now()
			if err := flush(); err != nil {
				t.Fatal(err)
			}
			spans := rec.Ended()
			if len(spans) != 1 {
				t.Fatalf("got %d spans, want 1", len(spans))
			}
			s := spans[0]
			if s.SpanContext().TraceID() != sc.TraceID() || s.SpanContext().SpanID() != sc.SpanID() {
				t.Errorf("span %v, want the ids the upstream got, %v", s.SpanContext(), sc)
			}
			wantParent := trace.SpanID{}
			if tc.parent {
				wantParent = trace.SpanID{4, 5, 6}
				if got, want := sc.TraceID(), (trace.TraceID{1, 2, 3}); got != want {
					t.Errorf("trace %v, want the parent's %v", got, want)
				}
			}
			if got := s.Parent().SpanID(); got != wantParent {
				t.Errorf("parent %v, want %v", got, wantParent)
			}
			if s.Name() != "a.v1.B/C" || s.SpanKind() != trace.SpanKindClient {
				t.Errorf("span %q of kind %v, want a.v1.B/C, client", s.Name(), s.SpanKind())
			}
			if s.StartTime().Before(before) || s.EndTime().Before(s.StartTime()) || s.EndTime().After(after) {
				t.Errorf("span from %v to %v, want within the stream's %v to %v", s.StartTime(), s.EndTime(), before, after)
			}
			got := map[string]string{}
			for _, kv := range s.Attributes() {
				got[string(kv.Key)] = kv.Value.Emit()
			}
			for k, want := range tc.wantAttrs {
				if got[k] != want {
					t.Errorf("%s = %q, want %q", k, got[k], want)
				}
			}
			if got := s.Status().Description; got != tc.wantStatus {
				t.Errorf("status %q, want %q", got, tc.wantStatus)
			}
		})
	}
}

// TestRelayQueue: the spans of ended streams are made without a flush, within relayDelay of
// the first's end; past relayQueueMax waiting records are dropped; close makes the spans of
// those waiting and drops what ends after.
func TestRelayQueue(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := newTracerProvider(ratioSampler(true, 1), sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	tr := Tracer(tp)
	StartRelay(context.Background(), tr, "/a.v1.B/C", "x:1").End(codes.OK)
	deadline := time.Now().Add(10 * relayDelay)
	for len(rec.Ended()) == 0 && time.Now().Before(deadline) {
		time.Sleep(relayDelay / 10)
	}
	if n := len(rec.Ended()); n != 1 {
		t.Fatalf("%d spans made %v after the stream ended, want 1", n, 10*relayDelay)
	}

	// A queue whose goroutine is not running, so that nothing is taken from it.
	q := &relayQueue{tr: tp.Tracer(ScopeName), first: make(chan struct{}, 1), full: make(chan struct{}, 1),
		flushes: make(chan chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	for range relayQueueMax + 10 {
		r := StartRelay(context.Background(), tr, "/a.v1.B/C", "x:1")
		r.q = q
		r.End(codes.OK)
	}
	if got := len(q.pending); got != relayQueueMax {
		t.Errorf("%d records waiting, want the bound, %d", got, relayQueueMax)
	}
	go q.run()
	q.close()
	if got, want := len(rec.Ended()), 1+relayQueueMax; got != want {
		t.Errorf("%d spans made after close, want %d", got, want)
	}
	r := StartRelay(context.Background(), tr, "/a.v1.B/C", "x:1")
	r.q = q
	r.End(codes.OK)
	if n := len(q.pending); n != 0 {
		t.Errorf("%d records waiting after close, want none", n)
	}
}

// TestIDs: ids are drawn valid and distinct, but a Relay's span takes the Relay's.
func TestIDs(t *testing.T) {
	seen := map[trace.TraceID]bool{}
	for range 1000 {
		tid, sid := ids{}.NewIDs(context.Background())
		if !tid.IsValid() || !sid.IsValid() || seen[tid] {
			t.Fatalf("ids %v %v: want valid, new ones", tid, sid)
		}
		seen[tid] = true
	}
	tp := newTracerProvider(ratioSampler(true, 1))
	defer tp.Shutdown(context.Background())
	r := StartRelay(context.Background(), Tracer(tp), "/a.v1.B/C", "x:1")
	ctx := context.WithValue(context.Background(), decided{}, r)
	if tid, sid := (ids{}).NewIDs(ctx); tid != r.sc.TraceID() || sid != r.sc.SpanID() {
		t.Errorf("NewIDs %v %v, want the Relay's %v", tid, sid, r.sc)
	}
	if sid := (ids{}).NewSpanID(ctx, r.sc.TraceID()); sid != r.sc.SpanID() {
		t.Errorf("NewSpanID %v, want the Relay's %v", sid, r.sc.SpanID())
	}
}
