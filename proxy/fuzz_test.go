package proxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
	"github.com/restate-grpc/restate-grpc/proxy"
)

const (
	// fuzzDeadline bounds each input: by then the relay has answered the closing PING or closed
	// the connection. An answer takes milliseconds; the bound is for a relay that hangs.
	fuzzDeadline = 5 * time.Second
	// fuzzMaxHeap bounds the heap's growth while the inputs run. An input writes at most fuzzMaxWrite,
	// and the relay holds no more than the windows it granted; a relay that buffers without
	// bound, or loops allocating, goes past it in well under fuzzDeadline.
	fuzzMaxHeap = 256 << 20
	// fuzzMaxWrite bounds what one input makes the client write.
	fuzzMaxWrite = 8 << 20
)

// fuzzPing is the payload of the PING that ends each input.
var fuzzPing = [8]byte{'f', 'u', 'z', 'z', 'l', 'i', 'n', 'k'}

// FuzzLink feeds frame sequences, decoded from the input (fuzzFrames), to the relay after a
// well-behaved client's preface and SETTINGS, with grpc-go servers behind it, local and
// upstream. Whatever the frames, the relay must not panic, must answer a PING sent after them
// or close the connection within fuzzDeadline, and must not grow the heap by fuzzMaxHeap.
// The seed corpus (testdata/fuzz/FuzzLink) holds the hostile sequences of issue 9.
func FuzzLink(f *testing.F) {
	relay := fuzzRelay(f)
	var running atomic.Value // the input's test name, for the heap watcher's panic
	watchHeap := fuzzWatchHeap(f, &running)
	f.Fuzz(func(t *testing.T, in []byte) {
		running.Store(t.Name())
		watchHeap()
		ctx, cancel := context.WithTimeout(context.Background(), fuzzDeadline)
		defer cancel()
		c, err := relay.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(fuzzDeadline))

		cl := &fuzzClient{c: c, fr: http2.NewFramer(c, nil), answered: make(chan struct{})}
		done := make(chan struct{})
		go func() {
			defer close(done)
			cl.read(t)
		}()
		defer func() { c.Close(); <-done }()

		if err := cl.write(func(fr *http2.Framer) error {
			if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
				return err
			}
			return fr.WriteSettings()
		}); err != nil {
			t.Fatalf("writing the preface: %v", err)
		}
		if err := fuzzFrames(in, cl.write); err != nil {
			if cl.isClosed() || !isTimeout(err) {
				return // the relay closed the connection, as it may for any of these frames
			}
			t.Fatalf("the relay stopped reading for %v: %v", fuzzDeadline, err)
		}
		if err := cl.write(func(fr *http2.Framer) error { return fr.WritePing(false, fuzzPing) }); err != nil && !cl.isClosed() && isTimeout(err) {
			t.Fatalf("the relay stopped reading for %v: %v", fuzzDeadline, err)
		}
		select {
		case <-cl.answered:
		case <-ctx.Done():
			t.Fatalf("the relay neither answered a PING nor closed the connection within %v of the input", fuzzDeadline)
		}
	})
}

// fuzzRelay serves a relay on a Pipe; its Director decides by :path (fuzzHeaderSets): local,
// upstream, or refused. The local and upstream servers are one grpc-go server that echoes what
// it reads.
func fuzzRelay(f *testing.F) *proxy.Pipe {
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawcodec.Codec), grpc.UnknownServiceHandler(func(_ any, s grpc.ServerStream) error {
		for {
			var m []byte
			if err := s.RecvMsg(&m); err != nil {
				return nil
			}
			if err := s.SendMsg(&m); err != nil {
				return err
			}
		}
	}))
	local, upstream, front := proxy.NewPipe(), proxy.NewPipe(), proxy.NewPipe()
	go srv.Serve(local)
	go srv.Serve(upstream)
	r := &proxy.Server{
		Director: func(req *proxy.Request) proxy.Decision {
			switch {
			case strings.HasPrefix(req.Method, "/fuzz.Local/"):
				return proxy.Decision{Local: true}
			case strings.HasPrefix(req.Method, "/fuzz.Upstream/"):
				return proxy.Decision{Upstream: "upstream"}
			}
			return fuzzRefuse
		},
		Local: local.Dial,
		Dial:  func(ctx context.Context, _ string) (net.Conn, error) { return upstream.Dial(ctx) },
		// A write stuck past this fails its connection: well within fuzzDeadline.
		WriteTimeout: time.Second,
		// The harness writes the preface and SETTINGS itself, at once: a stall of the fuzzing
		// process (coverage, minimization) must not pass for a peer that sends none.
		Limits: proxy.Limits{PrefaceTimeout: 10 * fuzzDeadline},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		r.Serve(front)
	}()
	f.Cleanup(func() {
		r.Close()
		<-served
		srv.Stop()
		for _, p := range []*proxy.Pipe{local, upstream, front} {
			p.Close()
		}
	})
	return front
}

var fuzzRefuse = proxy.Decision{Status: status.New(codes.Unimplemented, "fuzz: refused by the Director")}

// fuzzClient writes an input's frames and reads what the relay answers. The reader acks the
// relay's SETTINGS with a Framer of its own: each frame is one Write, which a net.Conn never
// interleaves with another, and a writer stuck on a relay that stopped reading cannot hold
// the reader up.
type fuzzClient struct {
	c  net.Conn
	fr *http2.Framer // the input's writes, on the test's goroutine

	closeOnce sync.Once
	answered  chan struct{} // closed on the PING's ack or the end of the connection
	closed    atomic.Bool
}

func (cl *fuzzClient) write(fn func(*http2.Framer) error) error { return fn(cl.fr) }

func (cl *fuzzClient) isClosed() bool { return cl.closed.Load() }

// read reads the relay's frames until the connection ends, acking its SETTINGS as a polite
// client would, and fails t on a frame no relay may send.
func (cl *fuzzClient) read(t *testing.T) {
	rf := http2.NewFramer(cl.c, cl.c)
	rf.SetMaxReadFrameSize(1<<24 - 1)
	answer := func() { cl.closeOnce.Do(func() { close(cl.answered) }) }
	defer answer()
	for {
		f, err := rf.ReadFrame()
		var ce http2.ConnectionError
		switch {
		case errors.As(err, &ce):
			t.Errorf("the relay wrote a malformed frame: %v", err)
			fallthrough
		case err != nil:
			cl.closed.Store(true)
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				rf.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if f.IsAck() && f.Data == fuzzPing {
				answer()
			}
		case *http2.GoAwayFrame:
			answer() // the relay is done with the connection; it may close it after a grace
		}
	}
}

// fuzzWatchHeap returns a function that starts sampling the heap (runtime/metrics, which stops
// no world) until f ends, panicking when it grows by more than fuzzMaxHeap; the first input
// starts it, so that it runs where inputs do, not in go test -fuzz's coordinator. A panic, not a
// failed test: a relay that allocates without bound goes on after its input has ended, and would
// take the process down before the test could report; the panic stops it there, with every
// goroutine's stack, and the fuzzer keeps the input that did it.
func fuzzWatchHeap(f *testing.F, running *atomic.Value) (start func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.Cleanup(func() {
		once.Do(func() { close(done) }) // never started
		close(quit)
		<-done
	})
	return func() {
		once.Do(func() {
			sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
			// What ran before the first input is not the relay's: it is the baseline.
			runtime.GC()
			metrics.Read(sample)
			limit := sample[0].Value.Uint64() + fuzzMaxHeap
			go func() {
				defer close(done)
				tick := time.NewTicker(5 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-quit:
						return
					case <-tick.C:
					}
					metrics.Read(sample)
					if heap := sample[0].Value.Uint64(); heap > limit {
						panic(fmt.Sprintf("%v: heap %d MiB while the relay served the input, want at most %d MiB", running.Load(), heap>>20, limit>>20))
					}
				}
			}()
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// fuzzFrames decodes in into frames and writes each with write, until in ends or a write
// fails. Each frame starts with an op byte; what follows depends on op%13 (fuzzInput reads
// zeros past the end):
//
//	0  DATA          flags, stream, len u16, payload
//	1  HEADERS       flags, stream, header set: a valid HPACK block of fuzzHeaderSets
//	2  CONTINUATION  flags, stream, header set
//	3  any frame     type, flags, stream, len u16, payload
//	4  SETTINGS      n%8, then n times: id%8, value u32
//	5  WINDOW_UPDATE stream, increment u32 (the reserved bit and 0 included)
//	6  RST_STREAM    stream, code
//	7  gRPC message  flags (bit 0: END_STREAM), stream, len u16: a length-prefixed message of
//	                 len bytes, in DATA frames of 16 KiB
//	8  DATA flood    stream, count, size u16 (at most 16 KiB): count DATA frames
//	9  CONTINUATION  flags (bit 0: END_HEADERS at the end), stream, count: a HEADERS without
//	   flood         END_HEADERS, then count CONTINUATIONs of 1 KiB of header fields each
//	10 PING          flags, 8 bytes
//	11 GOAWAY        last stream u32, code
//	12 PRIORITY      stream, dependency u32, weight
//
// A stream byte of 0xff is followed by a raw u32 id; any other is the id b%16 (0, odd and even
// ids, reused and decreasing ones).
func fuzzFrames(in []byte, write func(func(*http2.Framer) error) error) error {
	r := &fuzzInput{b: in}
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf) // one per connection: the relay's decoder follows its table
	block := func(set byte) []byte {
		hbuf.Reset()
		for _, hf := range fuzzHeaderSets[int(set)%len(fuzzHeaderSets)] {
			enc.WriteField(hf)
		}
		return bytes.Clone(hbuf.Bytes())
	}
	written := 0
	raw := func(t http2.FrameType, flags http2.Flags, id uint32, p []byte) error {
		written += 9 + len(p)
		if written > fuzzMaxWrite {
			return errFuzzEnough
		}
		return write(func(fr *http2.Framer) error { return fr.WriteRawFrame(t, flags, id, p) })
	}
	var err error
	for !r.done() && err == nil {
		switch op := r.byte(); op % 13 {
		case 0:
			flags, id := r.flags(), r.stream()
			err = raw(http2.FrameData, flags, id, r.bytes(int(r.u16())))
		case 1:
			flags, id := r.flags(), r.stream()
			err = raw(http2.FrameHeaders, flags, id, block(r.byte()))
		case 2:
			flags, id := r.flags(), r.stream()
			err = raw(http2.FrameContinuation, flags, id, block(r.byte()))
		case 3:
			t, flags, id := http2.FrameType(r.byte()), r.flags(), r.stream()
			err = raw(t, flags, id, r.bytes(int(r.u16())))
		case 4:
			var p []byte
			for range r.byte() % 8 {
				p = binary.BigEndian.AppendUint16(p, uint16(r.byte()%8))
				p = binary.BigEndian.AppendUint32(p, r.u32())
			}
			err = raw(http2.FrameSettings, 0, 0, p)
		case 5:
			id := r.stream()
			err = raw(http2.FrameWindowUpdate, 0, id, binary.BigEndian.AppendUint32(nil, r.u32()))
		case 6:
			id := r.stream()
			err = raw(http2.FrameRSTStream, 0, id, binary.BigEndian.AppendUint32(nil, uint32(r.byte())))
		case 7:
			end, id, n := r.byte()&1 == 1, r.stream(), int(r.u16())
			msg := append([]byte{0}, binary.BigEndian.AppendUint32(nil, uint32(n))...)
			msg = append(msg, make([]byte, n)...)
			for len(msg) > 0 && err == nil {
				chunk := msg[:min(len(msg), 16384)]
				msg = msg[len(chunk):]
				var flags http2.Flags
				if end && len(msg) == 0 {
					flags = http2.FlagDataEndStream
				}
				err = raw(http2.FrameData, flags, id, chunk)
			}
		case 8:
			id, count, size := r.stream(), int(r.byte()), int(r.u16())%16385
			for range count {
				if err = raw(http2.FrameData, 0, id, make([]byte, size)); err != nil {
					break
				}
			}
		case 9:
			end, id, count := r.byte()&1 == 1, r.stream(), int(r.byte())
			err = raw(http2.FrameHeaders, 0, id, block(0))
			for i := range count {
				if err != nil {
					break
				}
				var flags http2.Flags
				if end && i == count-1 {
					flags = http2.FlagContinuationEndHeaders
				}
				err = raw(http2.FrameContinuation, flags, id, block(fuzzFloodSet))
			}
		case 10:
			flags := r.flags()
			err = raw(http2.FramePing, flags, 0, r.bytes(8))
		case 11:
			last := r.u32()
			p := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, last), uint32(r.byte()))
			err = raw(http2.FrameGoAway, 0, 0, p)
		case 12:
			id, dep, weight := r.stream(), r.u32(), r.byte()
			err = raw(http2.FramePriority, 0, id, append(binary.BigEndian.AppendUint32(nil, dep), weight))
		}
	}
	if errors.Is(err, errFuzzEnough) {
		return nil
	}
	return err
}

var errFuzzEnough = errors.New("fuzz: input wrote enough")

// fuzzInput reads an input; past its end it reads zeros.
type fuzzInput struct{ b []byte }

func (r *fuzzInput) done() bool { return len(r.b) == 0 }

func (r *fuzzInput) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	b := r.b[0]
	r.b = r.b[1:]
	return b
}

func (r *fuzzInput) bytes(n int) []byte {
	p := make([]byte, n)
	r.b = r.b[copy(p, r.b):]
	return p
}

func (r *fuzzInput) u16() uint16 { return binary.BigEndian.Uint16(r.bytes(2)) }
func (r *fuzzInput) u32() uint32 { return binary.BigEndian.Uint32(r.bytes(4)) }

func (r *fuzzInput) flags() http2.Flags { return http2.Flags(r.byte()) }

func (r *fuzzInput) stream() uint32 {
	if b := r.byte(); b != 0xff {
		return uint32(b % 16)
	}
	return r.u32()
}

// fuzzHeaderSets are the header blocks ops 1, 2 and 9 write, valid HPACK all: calls the
// Director sends local, upstream and refused, trailers with and without pseudo-headers, and
// requests a server must refuse.
var fuzzHeaderSets = [][]hpack.HeaderField{
	fuzzCall("/fuzz.Upstream/Call"),
	fuzzCall("/fuzz.Local/Call"),
	fuzzCall("/fuzz.Refused/Call"),
	{{Name: "grpc-status", Value: "0"}},                                 // trailers
	{{Name: ":method", Value: "POST"}, {Name: "x-trailer", Value: "1"}}, // pseudo-header in trailers
	fuzzCall("/fuzz.Upstream/Call")[1:],                                 // no :method
	{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: "/"}, {Name: ":authority", Value: "fuzz"}},
	append(fuzzCall("/fuzz.Upstream/Call"), hpack.HeaderField{Name: "x-big", Value: strings.Repeat("b", 20000)}),
	append(fuzzCall("/fuzz.Local/Call"), hpack.HeaderField{Name: "connection", Value: "close"}, hpack.HeaderField{Name: "Upper", Value: "case"}),
	{{Name: "x-flood", Value: strings.Repeat("f", 1000)}},
}

// fuzzFloodSet is the block each CONTINUATION of a flood carries.
const fuzzFloodSet = 9

func fuzzCall(path string) []hpack.HeaderField {
	return []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path},
		{Name: ":authority", Value: "fuzz"},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
	}
}
