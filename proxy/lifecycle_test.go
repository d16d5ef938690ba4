package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/restate-grpc/restate-grpc/proxy"
)

// stallListener notes when a write to one of its connections is under way, so that a test
// can tell that the relay is blocked writing to a peer that does not read.
type stallListener struct {
	net.Listener
	writing atomic.Int64 // when the write under way began, in Unix ns; 0: none
}

func (l *stallListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return stallConn{Conn: c, l: l}, nil
}

// stalled reports whether a write has been under way for at least d.
func (l *stallListener) stalled(d time.Duration) bool {
	since := l.writing.Load()
	return since != 0 && time.Since(time.Unix(0, since)) >= d
}

type stallConn struct {
	net.Conn
	l *stallListener
}

func (c stallConn) Write(p []byte) (int, error) {
	c.l.writing.Store(time.Now().UnixNano())
	defer c.l.writing.Store(0)
	return c.Conn.Write(p)
}

// TestShutdownStuckPeer: a client that stops reading while an upstream floods it holds the
// relay's writes to it for up to WriteTimeout (10 s); Shutdown with a grace of 200 ms returns
// within its grace all the same.
func TestShutdownStuckPeer(t *testing.T) {
	addr, _ := upstream(t, func(_ any, s grpc.ServerStream) error {
		msg := &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, 64<<10)}}
		for {
			if err := s.SendMsg(msg); err != nil {
				return err
			}
		}
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl := &stallListener{Listener: l}
	r := &proxy.Server{Director: to(addr)}
	served := make(chan error, 1)
	go func() { served <- r.Serve(sl) }()
	t.Cleanup(func() {
		r.Close()
		<-served
	})

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out bytes.Buffer
	out.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&out, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	fr.WriteWindowUpdate(0, 1<<31-1-65535)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: callHeaders(), EndHeaders: true})
	fr.WriteData(1, true, []byte{0, 0, 0, 0, 0})
	if _, err := c.Write(out.Bytes()); err != nil {
		t.Fatal(err)
	}
	// and never reads: the relay's writes to c block once the socket buffers are full.
	if err := waitFor(20*time.Second, func() bool { return sl.stalled(100 * time.Millisecond) }); err != nil {
		t.Fatalf("the relay's writes to a client that does not read never blocked: %v", err)
	}

	const grace, bound = 200 * time.Millisecond, 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	start := time.Now()
	err = r.Shutdown(ctx)
	if d := time.Since(start); d > bound {
		t.Errorf("Shutdown with a grace of %s took %s, want at most %s", grace, d, bound)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown returned %v, want %v", err, context.DeadlineExceeded)
	}
}

// closedAfter reads c until it ends and returns the GOAWAYs it read, and when it ended.
func closedAfter(c net.Conn, start time.Time) (goaways []string, at time.Duration, err error) {
	fr := http2.NewFramer(io.Discard, c)
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return goaways, time.Since(start), nil
		} else if err != nil {
			return goaways, time.Since(start), err
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			goaways = append(goaways, "GOAWAY "+g.ErrCode.String())
		}
	}
}

// TestPrefaceAndIdleTimeouts: a connection that sends no preface, or no SETTINGS after it,
// is closed after PrefaceTimeout; one that sends something else than SETTINGS first breaks
// the protocol; one that opens no stream is told GOAWAY NO_ERROR after IdleTimeout.
func TestPrefaceAndIdleTimeouts(t *testing.T) {
	// Far apart, so that a loaded machine cannot make one look like the other.
	const preface, idle = 200 * time.Millisecond, 2 * time.Second
	tests := []struct {
		name     string
		send     func(fr *http2.Framer)
		goaways  []string
		min, max time.Duration
	}{
		{"nothing", nil, nil, preface, idle},
		{"preface only", func(*http2.Framer) {}, nil, preface, idle},
		{"a PING first", func(fr *http2.Framer) { fr.WritePing(false, [8]byte{}) }, []string{"GOAWAY PROTOCOL_ERROR"}, 0, idle},
		{"SETTINGS, no stream", func(fr *http2.Framer) { fr.WriteSettings() }, []string{"GOAWAY NO_ERROR"}, idle, 2 * idle},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &proxy.Server{Director: to("127.0.0.1:1"), Limits: proxy.Limits{PrefaceTimeout: preface, IdleTimeout: idle}}
	go r.Serve(l)
	t.Cleanup(r.Close)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(start.Add(10 * time.Second))
			if tt.send != nil {
				c.Write([]byte(http2.ClientPreface))
				tt.send(http2.NewFramer(c, nil))
			}
			goaways, at, err := closedAfter(c, start)
			if err != nil {
				t.Fatalf("reading until the relay closes: %v", err)
			}
			if !slices.Equal(goaways, tt.goaways) {
				t.Errorf("got %q, want %q", goaways, tt.goaways)
			}
			if at < tt.min || at > tt.max {
				t.Errorf("closed after %s, want between %s and %s", at, tt.min, tt.max)
			}
		})
	}
}

// TestIdleAfterStream: a stream open for longer than IdleTimeout keeps its connection; the
// idle time counts from its end.
func TestIdleAfterStream(t *testing.T) {
	const idle, call = 300 * time.Millisecond, 600 * time.Millisecond
	addr, _ := upstream(t, func(_ any, s grpc.ServerStream) error {
		time.Sleep(call) // the call itself takes this long
		return s.SendMsg(&testpb.Empty{})
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &proxy.Server{Director: to(addr), Limits: proxy.Limits{IdleTimeout: idle}}
	go r.Serve(l)
	t.Cleanup(r.Close)
	c, fr := dialRaw(t, l.Addr().String())
	defer c.Close()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: callHeaders(), EndHeaders: true})
	fr.WriteData(1, true, []byte{0, 0, 0, 0, 0})
	var got []string
	var ended time.Time
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading: %v (read %q)", err, got)
		}
		if h, ok := f.(*http2.HeadersFrame); ok && h.StreamEnded() {
			got, ended = append(got, "answer"), time.Now()
			break
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			got = append(got, "GOAWAY "+g.ErrCode.String())
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			fr.WriteSettingsAck()
		}
	}
	goaways, _, err := closedAfter(c, ended)
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, goaways...)
	if want := []string{"answer", "GOAWAY NO_ERROR"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if d := time.Since(ended); d < idle {
		t.Errorf("closed %s after the stream ended, want at least IdleTimeout (%s)", d, idle)
	}
}
