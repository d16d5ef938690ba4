package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
	"github.com/restate-grpc/restate-grpc/proxy"
)

const maxWindow = 1<<31 - 1

// hostileLimits are the relay's limits in these tests: small enough to reach in a test.
var hostileLimits = proxy.Limits{MaxConcurrentStreams: 8, MaxResetsPerSecond: 100}

// block encodes fields as one header block.
func block(fields ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return b.Bytes()
}

func request(path string) []byte {
	return block(":method", "POST", ":scheme", "http", ":path", path, ":authority", "x", "content-type", "application/grpc", "te", "trailers")
}

// oversized is a header block, led by lead, over the relay's default MaxHeaderListSize, made
// so that the limit is crossed in its last frame: the framer then reports the list as
// truncated instead of ending the connection for a CONTINUATION past the limit.
func oversized(lead ...string) [][]byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	size := uint32(0)
	for i := 0; i+1 < len(lead); i += 2 {
		f := hpack.HeaderField{Name: lead[i], Value: lead[i+1]}
		enc.WriteField(f)
		size += f.Size()
	}
	for i := 0; size <= proxy.DefaultLimits.MaxHeaderListSize; i++ {
		f := hpack.HeaderField{Name: fmt.Sprintf("x-h%d", i), Value: strings.Repeat(fmt.Sprint(i%10), 1000)}
		enc.WriteField(f)
		size += f.Size()
	}
	var frags [][]byte
	for rest := b.Bytes(); len(rest) > 0; {
		n := min(len(rest), 16384)
		frags = append(frags, rest[:n])
		rest = rest[n:]
	}
	return frags
}

func writeBlock(w *http2.Framer, id uint32, frags [][]byte, end bool) {
	w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frags[0], EndStream: end, EndHeaders: len(frags) == 1})
	for i, f := range frags[1:] {
		w.WriteContinuation(id, i == len(frags)-2, f)
	}
}

func open(w *http2.Framer, id uint32, path string, end bool) {
	w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: request(path), EndStream: end, EndHeaders: true})
}

// offence reads frames until the first GOAWAY, or RST_STREAM other than NO_ERROR, and names it.
func offence(fr *http2.Framer) string {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return fmt.Sprintf("no GOAWAY or RST_STREAM (%v)", err)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return "GOAWAY " + f.ErrCode.String()
		case *http2.RSTStreamFrame:
			if f.ErrCode != http2.ErrCodeNo {
				return "RST_STREAM " + f.ErrCode.String()
			}
		}
	}
}

// rawClient connects to the relay as an HTTP/2 client, the SETTINGS exchange done.
func rawClient(t *testing.T, addr string) (net.Conn, *http2.Framer) {
	t.Helper()
	c, fr := dialRaw(t, addr)
	for acked := false; !acked; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the relay's settings: %v", err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && s.IsAck() {
			acked = true
		} else if ok {
			fr.WriteSettingsAck()
		}
	}
	return c, fr
}

// rawUpstream is an upstream that speaks HTTP/2 as the test says: on each connection it
// sends settings, then answers each request's HEADERS with act, and reports the relay's
// GOAWAY and RST_STREAM frames.
type rawUpstream struct {
	l        net.Listener
	mu       sync.Mutex
	settings []http2.Setting
	act      func(w *http2.Framer, id uint32)
	requests int // HEADERS received
	acks     int // acks of its SETTINGS received
	got      chan string
}

func newRawUpstream(t *testing.T) *rawUpstream {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{l: l, got: make(chan string, 100)}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go u.serve(c)
		}
	}()
	return u
}

// set makes the connections from now on send settings, and every request answered with act.
func (u *rawUpstream) set(settings []http2.Setting, act func(*http2.Framer, uint32)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.settings, u.act, u.requests, u.acks = settings, act, 0, 0
	for len(u.got) > 0 {
		<-u.got
	}
}

func (u *rawUpstream) serve(c net.Conn) {
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.AllowIllegalWrites = true
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	u.mu.Lock()
	fr.WriteSettings(u.settings...)
	u.mu.Unlock()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			u.mu.Lock()
			u.requests++
			act := u.act
			u.mu.Unlock()
			if act != nil {
				act(fr, f.StreamID)
			}
		case *http2.SettingsFrame:
			if f.IsAck() {
				u.mu.Lock()
				u.acks++
				u.mu.Unlock()
			} else {
				fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			u.got <- "GOAWAY " + f.ErrCode.String()
		case *http2.RSTStreamFrame:
			u.got <- "RST_STREAM " + f.ErrCode.String()
		}
	}
}

// answerOK answers a request with an empty gRPC response.
func answerOK(w *http2.Framer, id uint32) {
	w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block(":status", "200", "content-type", "application/grpc"), EndHeaders: true})
	w.WriteData(id, false, []byte{0, 0, 0, 0, 0})
	w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block("grpc-status", "0"), EndHeaders: true, EndStream: true})
}

func respond(w *http2.Framer, id uint32) {
	w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block(":status", "200", "content-type", "application/grpc"), EndHeaders: true})
}

// hostileRelay is a relay with the routes the hostile cases use, and a client of it.
type hostileRelay struct {
	addr string
	cc   *grpc.ClientConn
	raw  *rawUpstream
	// seen holds what Server.Refused and Server.Broke were told, as "RST_STREAM CODE" and
	// "GOAWAY CODE" ("upstream GOAWAY CODE"), until taken.
	mu   sync.Mutex
	seen []string
}

func (h *hostileRelay) note(e string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, e)
}

// told returns what Refused and Broke were told since the last call, each once.
func (h *hostileRelay) told() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := slices.Compact(h.seen)
	h.seen = nil
	return seen
}

func newHostileRelay(t *testing.T) *hostileRelay {
	good, _ := upstream(t, func(_ any, s grpc.ServerStream) error {
		<-s.Context().Done() // /hang.*: a call that stays open
		return nil
	})
	raw := newRawUpstream(t)
	h := &hostileRelay{}
	local := grpc.NewServer(grpc.ForceServerCodecV2(rawcodec.Codec), grpc.UnknownServiceHandler(func(_ any, s grpc.ServerStream) error {
		var b []byte
		if err := s.RecvMsg(&b); err != nil {
			return err
		}
		return s.SendMsg(&b)
	}))
	cc, _, _ := relayLogged(t, func(r *proxy.Request) proxy.Decision {
		switch {
		case strings.HasPrefix(r.Method, "/status."):
			return proxy.Decision{Status: status.New(codes.NotFound, "nothing here")}
		case strings.HasPrefix(r.Method, "/raw."):
			return proxy.Decision{Upstream: raw.l.Addr().String()}
		case strings.HasPrefix(r.Method, "/local."):
			return proxy.Decision{Local: true}
		}
		return proxy.Decision{Upstream: good}
	}, local, func(r *proxy.Server) {
		r.Limits = hostileLimits
		r.Refused = func(c http2.ErrCode) { h.note("RST_STREAM " + c.String()) }
		r.Broke = func(upstream bool, c http2.ErrCode) {
			if upstream {
				h.note("upstream GOAWAY " + c.String())
				return
			}
			h.note("GOAWAY " + c.String())
		}
	})
	h.addr, h.cc, h.raw = cc.Target(), cc, raw
	return h
}

// serves checks that the relay still serves a passthrough call and a local one.
func (h *hostileRelay) serves(t *testing.T) {
	t.Helper()
	if _, err := testpb.NewTestServiceClient(h.cc).EmptyCall(testCtx(t), &testpb.Empty{}); err != nil {
		t.Errorf("passthrough call afterwards: %v", err)
	}
	in, out := []byte("hi"), []byte(nil)
	if err := h.cc.Invoke(testCtx(t), "/local.S/Echo", &in, &out, grpc.ForceCodecV2(rawcodec.Codec)); err != nil || string(out) != "hi" {
		t.Errorf("local call afterwards: got %q, %v, want %q", out, err, "hi")
	}
}

// usage is what the process holds: goroutines, and the heap after a GC.
type usage struct {
	goroutines int
	heap       uint64
}

func measure() usage {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return usage{runtime.NumGoroutine(), m.HeapAlloc}
}

// settles waits, for a bounded time, for the process to hold about what it held at base.
func settles(t *testing.T, base usage) {
	t.Helper()
	const goroutines, heap = 10, 8 << 20
	var u usage
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if u = measure(); u.goroutines <= base.goroutines+goroutines && u.heap <= base.heap+heap {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling; nothing to wait on
	}
	t.Errorf("after the case: %d goroutines and %d MiB of heap, want at most %d and %d MiB", u.goroutines, u.heap>>20, base.goroutines+goroutines, (base.heap+heap)>>20)
}

// TestHostilePeers: a downstream or an upstream that breaks the protocol gets the GOAWAY or
// RST_STREAM RFC 9113 names, its calls fail with a status that says why, and the relay goes
// on serving, holding no more than before.
func TestHostilePeers(t *testing.T) {
	h := newHostileRelay(t)
	h.serves(t)
	base := measure()
	data := func(n int) []byte { return make([]byte, n) }
	// push sends n bytes on stream id in frames of at most 16 KiB, ignoring every window.
	push := func(w *http2.Framer, id uint32, n int) {
		for ; n > 0; n -= 16384 {
			w.WriteData(id, false, data(min(n, 16384)))
		}
	}
	down := []struct {
		name  string
		send  func(w *http2.Framer)
		want  string
		lives bool // a stream error: the connection serves on
	}{
		{"SETTINGS_MAX_FRAME_SIZE 0, then a call", func(w *http2.Framer) {
			w.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 0})
			open(w, 1, "/hang.S/M", true)
		}, "GOAWAY PROTOCOL_ERROR", false},
		{"SETTINGS_MAX_FRAME_SIZE 2^24", func(w *http2.Framer) {
			w.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 24})
		}, "GOAWAY PROTOCOL_ERROR", false},
		{"SETTINGS_ENABLE_PUSH 2", func(w *http2.Framer) {
			w.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2})
		}, "GOAWAY PROTOCOL_ERROR", false},
		{"SETTINGS_INITIAL_WINDOW_SIZE 2^31", func(w *http2.Framer) {
			w.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}, "GOAWAY FLOW_CONTROL_ERROR", false},
		{"SETTINGS_INITIAL_WINDOW_SIZE that overflows a stream's window", func(w *http2.Framer) {
			open(w, 1, "/hang.S/M", false)
			w.WriteWindowUpdate(1, maxWindow-65535)
			w.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536})
		}, "GOAWAY FLOW_CONTROL_ERROR", false},
		{"SETTINGS ack of nothing", func(w *http2.Framer) {
			w.WriteSettingsAck()
		}, "GOAWAY PROTOCOL_ERROR", false},
		{"WINDOW_UPDATE of 0 on the connection", func(w *http2.Framer) {
			w.WriteWindowUpdate(0, 0)
		}, "GOAWAY PROTOCOL_ERROR", false},
		{"WINDOW_UPDATE of 0 on a stream", func(w *http2.Framer) {
			open(w, 1, "/hang.S/M", false)
			w.WriteWindowUpdate(1, 0)
		}, "RST_STREAM PROTOCOL_ERROR", true},
		{"WINDOW_UPDATE past 2^31-1 on the connection", func(w *http2.Framer) {
			w.WriteWindowUpdate(0, maxWindow)
		}, "GOAWAY FLOW_CONTROL_ERROR", false},
		{"WINDOW_UPDATE past 2^31-1 on a stream", func(w *http2.Framer) {
			open(w, 1, "/hang.S/M", false)
			w.WriteWindowUpdate(1, maxWindow)
		}, "RST_STREAM FLOW_CONTROL_ERROR", true},
		{"frame over SETTINGS_MAX_FRAME_SIZE", func(w *http2.Framer) {
			open(w, 1, "/hang.S/M", false)
			w.WriteData(1, false, data(20000))
		}, "GOAWAY FRAME_SIZE_ERROR", false},
		{"header block cut short by DATA", func(w *http2.Framer) {
			hb := request("/hang.S/M")
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb[:10]})
			w.WriteData(1, false, data(5))
		}, "GOAWAY PROTOCOL_ERROR", false},
		{"header list over SETTINGS_MAX_HEADER_LIST_SIZE", func(w *http2.Framer) {
			writeBlock(w, 1, oversized(":method", "POST", ":scheme", "http", ":path", "/hang.S/M", ":authority", "x"), true)
		}, "RST_STREAM FRAME_SIZE_ERROR", true},
		{"even stream id", func(w *http2.Framer) {
			open(w, 2, "/hang.S/M", true)
		}, "GOAWAY PROTOCOL_ERROR", false},
		{"decreasing stream id", func(w *http2.Framer) {
			open(w, 5, "/status.S/M", true)
			open(w, 3, "/status.S/M", true)
		}, "GOAWAY PROTOCOL_ERROR", false},
		{"HEADERS on a closed stream", func(w *http2.Framer) {
			open(w, 1, "/status.S/M", true)
			open(w, 1, "/status.S/M", true)
		}, "GOAWAY STREAM_CLOSED", false},
		{"HEADERS on a half-closed stream", func(w *http2.Framer) {
			open(w, 1, "/hang.S/M", true)
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("x-t", "1"), EndHeaders: true, EndStream: true})
		}, "RST_STREAM STREAM_CLOSED", true},
		{"DATA on a half-closed stream", func(w *http2.Framer) {
			open(w, 1, "/hang.S/M", true)
			w.WriteData(1, true, data(5))
		}, "RST_STREAM STREAM_CLOSED", true},
		{"trailers without END_STREAM", func(w *http2.Framer) {
			open(w, 1, "/hang.S/M", false)
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("x-t", "1"), EndHeaders: true})
		}, "RST_STREAM PROTOCOL_ERROR", true},
		{"pseudo-header in trailers", func(w *http2.Framer) {
			open(w, 1, "/hang.S/M", false)
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":path", "/x"), EndHeaders: true, EndStream: true})
		}, "RST_STREAM PROTOCOL_ERROR", true},
		{"request without :path", func(w *http2.Framer) {
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":method", "POST", ":scheme", "http", ":authority", "x"), EndHeaders: true, EndStream: true})
		}, "RST_STREAM PROTOCOL_ERROR", true},
		{"te other than trailers", func(w *http2.Framer) {
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":method", "POST", ":scheme", "http", ":path", "/hang.S/M", "te", "gzip"), EndHeaders: true, EndStream: true})
		}, "RST_STREAM PROTOCOL_ERROR", true},
		{"stream that depends on itself", func(w *http2.Framer) {
			w.WritePriority(1, http2.PriorityParam{StreamDep: 1, Weight: 1})
		}, "RST_STREAM PROTOCOL_ERROR", true},
		{"DATA on an idle stream", func(w *http2.Framer) {
			w.WriteData(1, true, data(5))
		}, "GOAWAY PROTOCOL_ERROR", false},
		{"WINDOW_UPDATE on an idle stream", func(w *http2.Framer) {
			w.WriteWindowUpdate(1, 100)
		}, "GOAWAY PROTOCOL_ERROR", false},
		{"RST_STREAM on an idle stream", func(w *http2.Framer) {
			w.WriteRSTStream(1, http2.ErrCodeCancel)
		}, "GOAWAY PROTOCOL_ERROR", false},
		{"streams past SETTINGS_MAX_CONCURRENT_STREAMS", func(w *http2.Framer) {
			for id := uint32(1); id <= 2*hostileLimits.MaxConcurrentStreams+1; id += 2 {
				open(w, id, "/hang.S/M", true)
			}
		}, "RST_STREAM REFUSED_STREAM", true},
		{"rapid reset (CVE-2023-44487)", func(w *http2.Framer) {
			for id := uint32(1); id < 2*uint32(hostileLimits.MaxResetsPerSecond)*20; id += 2 {
				open(w, id, "/status.S/M", true)
				w.WriteRSTStream(id, http2.ErrCodeCancel)
			}
		}, "GOAWAY ENHANCE_YOUR_CALM", false},
		{"rapid reset of relayed streams", func(w *http2.Framer) {
			for id := uint32(1); id < 2*uint32(hostileLimits.MaxResetsPerSecond)*20; id += 2 {
				open(w, id, "/hang.S/M", true)
				w.WriteRSTStream(id, http2.ErrCodeCancel)
			}
		}, "GOAWAY ENHANCE_YOUR_CALM", false},
		{"empty DATA frames", func(w *http2.Framer) {
			open(w, 1, "/hang.S/M", false)
			for range hostileLimits.MaxResetsPerSecond * 20 {
				w.WriteData(1, false, nil)
			}
		}, "GOAWAY ENHANCE_YOUR_CALM", false},
		{"DATA past the stream window", func(w *http2.Framer) {
			open(w, 1, "/raw.S/Stall", false)
			push(w, 1, 2<<20)
		}, "RST_STREAM FLOW_CONTROL_ERROR", true},
		{"DATA past the connection window", func(w *http2.Framer) {
			for id := uint32(1); id <= 9; id += 2 {
				open(w, id, "/raw.S/Stall", false)
				push(w, id, 1<<20)
			}
		}, "GOAWAY FLOW_CONTROL_ERROR", false},
	}
	for _, tt := range down {
		t.Run("downstream/"+tt.name, func(t *testing.T) {
			h.raw.set(nil, nil)
			c, fr := rawClient(t, h.addr)
			defer c.Close()
			var out bytes.Buffer
			w := http2.NewFramer(&out, nil)
			w.AllowIllegalWrites = true
			tt.send(w)
			wrote := make(chan struct{})
			go func() { c.Write(out.Bytes()); close(wrote) }()
			if got := offence(fr); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
			<-wrote
			if tt.lives {
				fr.WritePing(false, [8]byte{9})
				if got := pingAck(fr); got != "" {
					t.Errorf("the connection after the stream error: %s, want a PING ack", got)
				}
			}
			c.Close()
			h.serves(t)
			// The connection closes and the streams refused before the Director saw them
			// are what Broke and Refused are told of; the other stream errors are not.
			var want []string
			if !tt.lives || tt.want == "RST_STREAM REFUSED_STREAM" || tt.name == "header list over SETTINGS_MAX_HEADER_LIST_SIZE" {
				want = []string{tt.want}
			}
			if got := h.told(); !slices.Equal(got, want) {
				t.Errorf("Refused and Broke were told %q, want %q", got, want)
			}
			settles(t, base)
		})
	}

	wantUp := func(msg string) string { return "upstream " + h.raw.l.Addr().String() + msg }
	up := []struct {
		name     string
		settings []http2.Setting
		act      func(w *http2.Framer, id uint32)
		want     string     // what the upstream gets
		code     codes.Code // the call's status
		msg      string     // in its message
	}{
		{"SETTINGS_MAX_FRAME_SIZE 0", []http2.Setting{{ID: http2.SettingMaxFrameSize, Val: 0}}, nil,
			"GOAWAY PROTOCOL_ERROR", codes.Unavailable, wantUp(": broke the protocol")},
		{"SETTINGS_INITIAL_WINDOW_SIZE 2^31", []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1 << 31}}, nil,
			"GOAWAY FLOW_CONTROL_ERROR", codes.Unavailable, wantUp(": broke the protocol")},
		{"SETTINGS_ENABLE_PUSH 1", []http2.Setting{{ID: http2.SettingEnablePush, Val: 1}}, nil,
			"GOAWAY PROTOCOL_ERROR", codes.Unavailable, wantUp(": broke the protocol")},
		{"WINDOW_UPDATE of 0 on the connection", nil, func(w *http2.Framer, id uint32) {
			w.WriteWindowUpdate(0, 0)
		}, "GOAWAY PROTOCOL_ERROR", codes.Unavailable, wantUp(": broke the protocol")},
		{"PUSH_PROMISE", nil, func(w *http2.Framer, id uint32) {
			w.WritePushPromise(http2.PushPromiseParam{StreamID: id, PromiseID: 2, BlockFragment: request("/x"), EndHeaders: true})
		}, "GOAWAY PROTOCOL_ERROR", codes.Unavailable, wantUp(": broke the protocol")},
		{"DATA on a stream never opened", nil, func(w *http2.Framer, id uint32) {
			w.WriteData(id+100, false, data(5))
		}, "GOAWAY PROTOCOL_ERROR", codes.Unavailable, wantUp(": broke the protocol")},
		{"HEADERS on a stream never opened", nil, func(w *http2.Framer, id uint32) {
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: id + 100, BlockFragment: block(":status", "200"), EndHeaders: true})
		}, "GOAWAY PROTOCOL_ERROR", codes.Unavailable, wantUp(": broke the protocol")},
		{"frame over SETTINGS_MAX_FRAME_SIZE", nil, func(w *http2.Framer, id uint32) {
			respond(w, id)
			w.WriteData(id, false, data(20000))
		}, "GOAWAY FRAME_SIZE_ERROR", codes.Unavailable, wantUp(": broke the protocol")},
		{"response without :status", nil, func(w *http2.Framer, id uint32) {
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block("content-type", "application/grpc"), EndHeaders: true})
		}, "RST_STREAM PROTOCOL_ERROR", codes.Internal, wantUp(" broke the protocol: response without :status")},
		{"DATA before the response headers", nil, func(w *http2.Framer, id uint32) {
			w.WriteData(id, false, data(5))
		}, "RST_STREAM PROTOCOL_ERROR", codes.Internal, wantUp(" broke the protocol: DATA before the response headers")},
		{"trailers without END_STREAM", nil, func(w *http2.Framer, id uint32) {
			respond(w, id)
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block("grpc-status", "0"), EndHeaders: true})
		}, "RST_STREAM PROTOCOL_ERROR", codes.Internal, wantUp(" broke the protocol: trailers without END_STREAM")},
		{"response header list over SETTINGS_MAX_HEADER_LIST_SIZE", nil, func(w *http2.Framer, id uint32) {
			writeBlock(w, id, oversized(":status", "200"), false)
		}, "RST_STREAM FRAME_SIZE_ERROR", codes.ResourceExhausted, wantUp(" sent a response header list over the limit")},
	}
	for _, tt := range up {
		t.Run("upstream/"+tt.name, func(t *testing.T) {
			h.raw.set(tt.settings, tt.act)
			// A client of its own: a new link, so a new connection to the raw upstream.
			cc, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			in, out := []byte("hi"), []byte(nil)
			err = cc.Invoke(testCtx(t), "/raw.S/M", &in, &out, grpc.ForceCodecV2(rawcodec.Codec))
			if st := status.Convert(err); st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Errorf("call: got %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
			select {
			case got := <-h.raw.got:
				if got != tt.want {
					t.Errorf("the upstream got %s, want %s", got, tt.want)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("the upstream got nothing, want %s", tt.want)
			}
			cc.Close()
			h.serves(t)
			var want []string
			if strings.HasPrefix(tt.want, "GOAWAY") {
				want = []string{"upstream " + tt.want}
			}
			if got := h.told(); !slices.Equal(got, want) {
				t.Errorf("Broke was told %q, want %q", got, want)
			}
			settles(t, base)
		})
	}
}

// pingAck reads frames until the ack of a PING, and names what came instead.
func pingAck(fr *http2.Framer) string {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return err.Error()
		}
		switch f := f.(type) {
		case *http2.PingFrame:
			if f.IsAck() {
				return ""
			}
		case *http2.GoAwayFrame:
			return "GOAWAY " + f.ErrCode.String()
		}
	}
}

// TestUpstreamHeaderListSize: a request header block larger than the upstream's
// SETTINGS_MAX_HEADER_LIST_SIZE fails its call with RESOURCE_EXHAUSTED and never reaches it.
func TestUpstreamHeaderListSize(t *testing.T) {
	raw := newRawUpstream(t)
	raw.set([]http2.Setting{{ID: http2.SettingMaxHeaderListSize, Val: 1024}}, answerOK)
	cc, _ := relay(t, to(raw.l.Addr().String()), nil)
	in, out := []byte{}, []byte(nil)
	// The first call lets the relay learn the limit from the upstream's SETTINGS.
	if err := cc.Invoke(testCtx(t), "/raw.S/M", &in, &out, grpc.ForceCodecV2(rawcodec.Codec)); err != nil {
		t.Fatal(err)
	}
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "x-big", strings.Repeat("b", 2000))
	err := cc.Invoke(ctx, "/raw.S/M", &in, &out, grpc.ForceCodecV2(rawcodec.Codec))
	want := "larger than upstream " + raw.l.Addr().String() + " accepts (1024)"
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), want) {
		t.Errorf("got %v %q, want ResourceExhausted containing %q", st.Code(), st.Message(), want)
	}
	raw.mu.Lock()
	defer raw.mu.Unlock()
	if raw.requests != 1 {
		t.Errorf("the upstream got %d requests, want 1", raw.requests)
	}
}

// TestWindowsBoundMemory: a downstream that pushes 64 MiB past the 1 MiB window of a stream
// whose upstream does not read gets FLOW_CONTROL_ERROR, and the relay's heap grows by about
// the window, not by what was pushed.
func TestWindowsBoundMemory(t *testing.T) {
	raw := newRawUpstream(t) // never reads a request's DATA, never grants window
	cc, _ := relay(t, to(raw.l.Addr().String()), nil)
	c, fr := rawClient(t, cc.Target())
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	base := measure()
	pushed := make(chan error, 1)
	go func() {
		var out bytes.Buffer
		w := http2.NewFramer(&out, nil)
		open(w, 1, "/raw.S/Stall", false)
		c.Write(out.Bytes())
		frame := make([]byte, 16384)
		for range (64 << 20) / len(frame) {
			out.Reset()
			w.WriteData(1, false, frame)
			if _, err := c.Write(out.Bytes()); err != nil {
				pushed <- err
				return
			}
		}
		pushed <- nil
	}()
	if got, want := offence(fr), "RST_STREAM FLOW_CONTROL_ERROR"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	// The relay answers each later DATA frame of the stream (STREAM_CLOSED): read them all.
	done := make(chan struct{})
	go func() {
		for {
			if _, err := fr.ReadFrame(); err != nil {
				close(done)
				return
			}
		}
	}()
	if err := <-pushed; err != nil {
		t.Fatalf("pushing: %v", err)
	}
	if u := measure(); u.heap > base.heap+8<<20 {
		t.Errorf("heap grew by %d MiB while 64 MiB were pushed past a 1 MiB window, want at most 8 MiB", (u.heap-base.heap)>>20)
	}
	c.Close()
	<-done
}

// TestPoliteUnderLimits: the limits of the hostile cases refuse no polite peer.
func TestPoliteUnderLimits(t *testing.T) {
	addr, _ := upstream(t, nil)
	cc, _, _ := relayLogged(t, to(addr), nil, func(r *proxy.Server) { r.Limits = hostileLimits })
	tc := testpb.NewTestServiceClient(cc)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 { // more calls than MaxConcurrentStreams: grpc-go queues them, none is refused
		wg.Go(func() {
			if _, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 100000}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	interop.DoLargeUnaryCall(ctx, tc)
}

// TestUpstreamConnsBounded: streams to an upstream that takes one stream per connection
// open at most a bounded number of connections; the streams past them are answered at once.
func TestUpstreamConnsBounded(t *testing.T) {
	const streams, conns = 40, 32 // conns: the relay's bound, maxUpstreamConns
	raw := newRawUpstream(t)
	var mu sync.Mutex
	accepted := 0
	raw.set([]http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 1}}, func(w *http2.Framer, id uint32) {
		mu.Lock()
		accepted++
		mu.Unlock()
		if id == 1 {
			answerOK(w, id)
		}
	})
	cc, _, _ := relayLogged(t, to(raw.l.Addr().String()), nil, func(r *proxy.Server) { r.Limits.MaxConcurrentStreams = 100 })
	c, fr := rawClient(t, cc.Target())
	defer c.Close()
	// The first call lets the relay learn the limit from the upstream's SETTINGS.
	var out bytes.Buffer
	w := http2.NewFramer(&out, nil)
	open(w, 1, "/raw.S/M", true)
	c.Write(out.Bytes())
	ended := func(want int) {
		for n := 0; n < want; {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("after %d answers of %d: %v", n, want, err)
			}
			if f, ok := f.(*http2.HeadersFrame); ok && f.StreamEnded() {
				n++
			}
		}
	}
	ended(1)
	out.Reset()
	for i := range uint32(streams) {
		open(w, 3+2*i, "/raw.S/M", true)
	}
	c.Write(out.Bytes())
	ended(streams - conns)
	got := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		mu.Lock()
		got = accepted
		mu.Unlock()
		if got >= 1+conns {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling: the relay dials on goroutines of its own
	}
	if got != 1+conns {
		t.Errorf("the upstream got %d requests, want %d: one per connection", got, 1+conns)
	}
}

// TestDownstreamHeaderListSize: a response header block larger than the caller's
// SETTINGS_MAX_HEADER_LIST_SIZE is not sent: the call ends with RESOURCE_EXHAUSTED, and the
// upstream's stream is cancelled.
func TestDownstreamHeaderListSize(t *testing.T) {
	raw := newRawUpstream(t)
	raw.set(nil, func(w *http2.Framer, id uint32) {
		w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block(":status", "200", "content-type", "application/grpc", "x-big", strings.Repeat("b", 500)), EndHeaders: true})
	})
	cc, _ := relay(t, to(raw.l.Addr().String()), nil)
	c, _ := rawClient(t, cc.Target())
	defer c.Close()
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var out bytes.Buffer
	w := http2.NewFramer(&out, nil)
	w.WriteSettings(http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: 300})
	open(w, 1, "/raw.S/M", true)
	c.Write(out.Bytes())
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if f, ok := f.(*http2.MetaHeadersFrame); ok {
			if got, want := f.PseudoValue("status")+" grpc-status "+headerValue(f, "grpc-status"), "200 grpc-status 8"; got != want || !f.StreamEnded() {
				t.Errorf("got %s (END_STREAM %v), want %s, END_STREAM", got, f.StreamEnded(), want)
			}
			if got, want := headerValue(f, "grpc-message"), "is larger than the caller accepts (300)"; !strings.Contains(got, want) {
				t.Errorf("grpc-message %q, want it to contain %q", got, want)
			}
			break
		}
	}
	select {
	case got := <-raw.got:
		if want := "RST_STREAM CANCEL"; got != want {
			t.Errorf("the upstream got %s, want %s", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Error("the upstream's stream was not cancelled")
	}
}

func headerValue(f *http2.MetaHeadersFrame, name string) string {
	for _, h := range f.Fields {
		if h.Name == name {
			return h.Value
		}
	}
	return ""
}

// TestFloodsBounded: a peer that floods PINGs or SETTINGS, each owed an ack, and reads none
// of them holds little of the relay's memory: the relay reads no faster than it can write
// the acks, and closes the connection once its writes stall for WriteTimeout.
func TestFloodsBounded(t *testing.T) {
	floods := []struct {
		name  string
		frame func(w *http2.Framer)
	}{
		{"PING", func(w *http2.Framer) { w.WritePing(false, [8]byte{1}) }},
		{"SETTINGS", func(w *http2.Framer) { w.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 5}) }},
	}
	for _, tt := range floods {
		t.Run(tt.name, func(t *testing.T) {
			cc, _, _ := relayLogged(t, to("127.0.0.1:1"), nil, func(r *proxy.Server) { r.WriteTimeout = 300 * time.Millisecond })
			c, _ := rawClient(t, cc.Target())
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			base := measure()
			var out bytes.Buffer
			w := http2.NewFramer(&out, nil)
			for range 4096 {
				tt.frame(w)
			}
			var err error
			for sent := 0; err == nil && sent < 256<<20; sent += out.Len() {
				_, err = c.Write(out.Bytes())
			}
			if err == nil {
				t.Errorf("the relay read 256 MiB of %s frames whose acks went unread, want it to close the connection", tt.name)
			}
			if u := measure(); u.heap > base.heap+8<<20 {
				t.Errorf("heap grew by %d MiB during the flood, want at most 8 MiB", (u.heap-base.heap)>>20)
			}
		})
	}
}

// TestUpstreamPastWindow: an upstream that sends past the stream window it was granted, while
// the caller reads slowly, gets FLOW_CONTROL_ERROR, and the call fails with a message naming it.
func TestUpstreamPastWindow(t *testing.T) {
	raw := newRawUpstream(t)
	raw.set(nil, func(w *http2.Framer, id uint32) {
		respond(w, id)
		for range (2 << 20) / 16384 {
			w.WriteData(id, false, make([]byte, 16384))
		}
	})
	cc, _ := relay(t, to(raw.l.Addr().String()), nil)
	c, _ := rawClient(t, cc.Target()) // grants no more than the initial 64 KiB
	defer c.Close()
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var out bytes.Buffer
	open(http2.NewFramer(&out, nil), 1, "/raw.S/M", true)
	c.Write(out.Bytes())
	select {
	case got := <-raw.got:
		if want := "RST_STREAM FLOW_CONTROL_ERROR"; got != want {
			t.Errorf("the upstream got %s, want %s", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Error("the upstream got nothing, want RST_STREAM FLOW_CONTROL_ERROR")
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if f, ok := f.(*http2.MetaHeadersFrame); ok && f.StreamEnded() {
			want := "upstream " + raw.l.Addr().String() + " broke the protocol: DATA past the window of stream 1"
			if code, msg := headerValue(f, "grpc-status"), headerValue(f, "grpc-message"); code != "13" || !strings.Contains(msg, want) {
				t.Errorf("got grpc-status %s %q, want 13 containing %q", code, msg, want)
			}
			return
		}
	}
}

// TestRapidResetAtScale: issue 9's CVE-2023-44487 run, 100,000 relayed streams opened and
// reset on one connection, under the default limits: the connection is closed with
// ENHANCE_YOUR_CALM after about the burst the limits allow, goroutines stay far below one per
// stream (the issue saw ~15,800), and the relay serves on.
func TestRapidResetAtScale(t *testing.T) {
	good, _ := upstream(t, func(_ any, s grpc.ServerStream) error {
		<-s.Context().Done()
		return nil
	})
	cc, _ := relay(t, to(good), nil)
	tc := testpb.NewTestServiceClient(cc)
	if _, err := tc.EmptyCall(testCtx(t), &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}
	c, fr := rawClient(t, cc.Target())
	defer c.Close()
	base := measure()
	peaked := make(chan int, 1)
	go func() { // the goroutines at their peak, sampled after each write
		peak := 0
		defer func() { peaked <- peak }()
		var out bytes.Buffer
		w := http2.NewFramer(&out, nil)
		for id := uint32(1); id < 2*100000; id += 2 {
			open(w, id, "/hang.S/M", true)
			w.WriteRSTStream(id, http2.ErrCodeCancel)
			if out.Len() > 4<<10 {
				if _, err := c.Write(out.Bytes()); err != nil {
					return
				}
				out.Reset()
				peak = max(peak, runtime.NumGoroutine())
			}
		}
		c.Write(out.Bytes())
	}()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY: %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Errorf("got GOAWAY %v, want ENHANCE_YOUR_CALM", g.ErrCode)
			}
			if max := 2 * uint32(proxy.DefaultLimits.MaxResetsPerSecond) * 10 * 2; g.LastStreamID > max+1 {
				t.Errorf("GOAWAY after stream %d, want it within the burst, by stream %d", g.LastStreamID, max+1)
			}
			break
		}
	}
	c.Close()
	peak := <-peaked
	if limit := base.goroutines + 1000; peak > limit {
		t.Errorf("%d goroutines at the peak, want at most %d", peak, limit)
	}
	t.Logf("%d goroutines at the peak, %d before", peak, base.goroutines)
	if _, err := tc.EmptyCall(testCtx(t), &testpb.Empty{}); err != nil {
		t.Errorf("passthrough call afterwards: %v", err)
	}
	settles(t, base)
}

// TestUpstreamHeaderListSizeLearned: a new connection to an upstream takes the
// SETTINGS_MAX_HEADER_LIST_SIZE its siblings said until its own SETTINGS come, so that even
// its first request is held to it.
func TestUpstreamHeaderListSizeLearned(t *testing.T) {
	raw := newRawUpstream(t)
	// One stream per connection, the first call held open: the second takes a new connection.
	raw.set([]http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 1}, {ID: http2.SettingMaxHeaderListSize, Val: 1024}}, nil)
	cc, _ := relay(t, to(raw.l.Addr().String()), nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	go cc.Invoke(ctx, "/raw.S/Hold", &[]byte{}, &[]byte{}, grpc.ForceCodecV2(rawcodec.Codec))
	for deadline := time.Now().Add(10 * time.Second); ; {
		raw.mu.Lock()
		n, acks := raw.requests, raw.acks
		raw.mu.Unlock()
		if n == 1 && acks == 1 { // the relay took its first connection's SETTINGS
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests and %d SETTINGS acks at the upstream, want 1 and 1", n, acks)
		}
		time.Sleep(10 * time.Millisecond) // polling: the relay dials on a goroutine of its own
	}
	in, out := []byte{}, []byte(nil)
	big := metadata.AppendToOutgoingContext(testCtx(t), "x-big", strings.Repeat("b", 2000))
	err := cc.Invoke(big, "/raw.S/M", &in, &out, grpc.ForceCodecV2(rawcodec.Codec))
	want := "larger than upstream " + raw.l.Addr().String() + " accepts (1024)"
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), want) {
		t.Errorf("got %v %q, want ResourceExhausted containing %q", st.Code(), st.Message(), want)
	}
}
