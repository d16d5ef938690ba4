package tracing

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
)

// Relay is the client span of one relayed (passthrough) stream. The relay starts and ends
// streams on a connection's goroutine with the connection locked, where making the SDK's span
// cost more than relaying the stream, and more again for the caches it cooled for the calls
// around it. With Setup's tracer, a Relay is only the record of the span: its ids, times and
// end. A goroutine of the provider's makes the SDK's spans of ended Relays in batches, with
// those ids, so the span the upstream was told of is the one exported. With any other tracer
// the Relay holds the SDK's span, made at once.
type Relay struct {
	method, addr string
	parent, sc   trace.SpanContext
	start, end   time.Time
	code         codes.Code
	reset        string // why the stream ended without a gRPC status; "" when it has one

	q    *relayQueue // Setup's tracer: where the record goes as it ends
	span trace.Span  // any other tracer
}

// StartRelay starts the span of a stream of the gRPC call method relayed to addr, a child of
// ctx's span context; nil when the stream is not sampled.
func StartRelay(ctx context.Context, tr trace.Tracer, method, addr string) *Relay {
	t, own := tr.(*tracer)
	if !own {
		_, span := tr.Start(ctx, spanName(method), trace.WithSpanKind(trace.SpanKindClient))
		if !span.IsRecording() {
			return nil
		}
		return &Relay{method: method, addr: addr, sc: span.SpanContext(), span: span}
	}
	parent := trace.SpanContextFromContext(ctx)
	if !t.s.sample(parent) {
		return nil
	}
	tid := parent.TraceID()
	if !parent.IsValid() {
		tid = newTraceID()
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: newSpanID(),
		TraceFlags: trace.FlagsSampled, TraceState: parent.TraceState()})
	return &Relay{method: method, addr: addr, parent: parent, sc: sc, start: time.Now(), q: t.q}
}

// SpanContext is the span's, for the upstream's traceparent.
func (r *Relay) SpanContext() trace.SpanContext { return r.sc }

// End ends the span of a stream that ended with the gRPC code code.
func (r *Relay) End(code codes.Code) {
	r.code = code
	r.finish()
}

// Reset ends the span of a stream that was reset before a gRPC status ended it; reason says
// how (the RST_STREAM's code).
func (r *Relay) Reset(reason string) {
	r.reset = reason
	r.finish()
}

func (r *Relay) finish() {
	if r.q == nil {
		r.record(r.span)
		r.span.End()
		return
	}
	r.end = time.Now()
	r.q.add(r)
}

// record gives span the stream's attributes, all in one call (the SDK copies them on each),
// and its status.
func (r *Relay) record(span trace.Span) {
	attrs := append(RPCAttributes(make([]attribute.KeyValue, 0, 6), r.method),
		AttrMode.String(ModePassthrough), semconv.ServerAddress(r.addr))
	if r.reset != "" {
		span.SetAttributes(attrs...)
		span.SetStatus(otelcodes.Error, r.reset)
		return
	}
	setCode(span, trace.SpanKindClient, r.code, "", attrs...)
}

// ModePassthrough is restate_grpc.mode of a relayed stream's span.
const ModePassthrough = "passthrough"

// Bounds of the records of ended streams waiting for their spans: a batch is made when
// relayBatch are waiting or the oldest has waited relayDelay, and past relayQueueMax the
// records of streams ending are dropped, as the SDK's batcher drops spans past its queue.
const (
	relayBatch    = 128
	relayDelay    = 100 * time.Millisecond
	relayQueueMax = 2048
)

// relayQueue makes the SDK's spans of ended Relays on its goroutine, which run is and close
// ends.
type relayQueue struct {
	tr trace.Tracer // the SDK's, of Setup's provider

	mu      sync.Mutex
	pending []*Relay
	closed  bool

	first, full chan struct{}      // a record is waiting; relayBatch are
	flushes     chan chan struct{} // ForceFlush's, each closed once its spans are made
	stop, done  chan struct{}
}

func newRelayQueue(tr trace.Tracer) *relayQueue {
	q := &relayQueue{tr: tr, first: make(chan struct{}, 1), full: make(chan struct{}, 1),
		flushes: make(chan chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go q.run()
	return q
}

func (q *relayQueue) add(r *Relay) {
	q.mu.Lock()
	if q.closed || len(q.pending) >= relayQueueMax {
		q.mu.Unlock()
		return
	}
	q.pending = append(q.pending, r)
	n := len(q.pending)
	q.mu.Unlock()
	switch n {
	case 1:
		signal(q.first)
	case relayBatch:
		signal(q.full)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (q *relayQueue) run() {
	defer close(q.done)
	wait := time.NewTimer(relayDelay)
	wait.Stop()
	var batch []*Relay
	for {
		var flushed chan struct{}
		select {
		case <-q.first:
			// Let a batch gather: its spans are made in one go, on warm caches, and the
			// SDK's batcher is woken once for them rather than for each.
			wait.Reset(relayDelay)
			select {
			case <-q.full:
			case <-wait.C:
			case flushed = <-q.flushes:
			case <-q.stop:
			}
			wait.Stop()
		case flushed = <-q.flushes:
		case <-q.stop:
			q.makeSpans(q.take(nil))
			return
		}
		batch = q.take(batch)
		q.makeSpans(batch)
		clear(batch) // the records are the SDK's spans' now
		if flushed != nil {
			close(flushed)
		}
	}
}

// flush makes the spans of the records waiting, for ForceFlush.
func (q *relayQueue) flush(ctx context.Context) error {
	flushed := make(chan struct{})
	select {
	case q.flushes <- flushed:
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-flushed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// take swaps the waiting records for buf's emptied array.
func (q *relayQueue) take(buf []*Relay) []*Relay {
	q.mu.Lock()
	defer q.mu.Unlock()
	b := q.pending
	q.pending = buf[:0]
	return b
}

func (q *relayQueue) makeSpans(rs []*Relay) {
	for _, r := range rs {
		ctx := context.WithValue(context.Background(), decided{}, r)
		if r.parent.IsValid() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, r.parent)
		}
		_, span := q.tr.Start(ctx, spanName(r.method), trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(r.start))
		r.record(span)
		span.End(trace.WithTimestamp(r.end))
	}
}

// close makes the spans of the records waiting and stops the goroutine; what ends after is
// dropped.
func (q *relayQueue) close() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	q.mu.Unlock()
	close(q.stop)
	<-q.done
}

// ids makes span ids as the SDK's default generator does, at random, but for a relayed
// stream's span, whose ids its Relay chose when the stream started.
type ids struct{}

func (ids) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if r, ok := ctx.Value(decided{}).(*Relay); ok {
		return r.sc.TraceID(), r.sc.SpanID()
	}
	return newTraceID(), newSpanID()
}

func (ids) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	if r, ok := ctx.Value(decided{}).(*Relay); ok {
		return r.sc.SpanID()
	}
	return newSpanID()
}

// newTraceID and newSpanID draw from the runtime's ChaCha8 source, per thread and without a
// lock; an all-zero id is invalid, so it is drawn again.
func newTraceID() (id trace.TraceID) {
	for !id.IsValid() {
		binary.LittleEndian.PutUint64(id[:8], rand.Uint64())
		binary.LittleEndian.PutUint64(id[8:], rand.Uint64())
	}
	return id
}

func newSpanID() (id trace.SpanID) {
	for !id.IsValid() {
		binary.LittleEndian.PutUint64(id[:], rand.Uint64())
	}
	return id
}
