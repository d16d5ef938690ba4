package proxy_test

import (
	"bytes"
	"net"
	"slices"
	"strings"
	"sync"
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

// TestLocalWithoutServer: a Local decision on a Server without Local fails the call, not the
// sidecar.
func TestLocalWithoutServer(t *testing.T) {
	cc, _ := relay(t, func(*proxy.Request) proxy.Decision { return proxy.Decision{Local: true} }, nil)
	err := cc.Invoke(testCtx(t), "/x.Svc/Do", &[]byte{}, &[]byte{}, grpc.ForceCodecV2(rawcodec.Codec))
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "no local server") {
		t.Errorf("got %v, want Unavailable: no local server", err)
	}
}

func rawCall(t *testing.T, rl *recordingListener, call func(*http2.Framer)) net.Conn {
	t.Helper()
	c, fr := dialRaw(t, rl.Addr().String())
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
	rl.reset()
	var out bytes.Buffer
	call(http2.NewFramer(&out, nil))
	c.Write(out.Bytes())
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if h := f.Header(); h.StreamID == 1 && h.Type == http2.FrameHeaders && h.Flags.Has(http2.FlagHeadersEndStream) {
			return c
		}
	}
}

// dialRaw connects to the relay at addr as an HTTP/2 client: preface and SETTINGS sent.
func dialRaw(t *testing.T, addr string) (net.Conn, *http2.Framer) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	return c, fr
}

// callHeaders is the header block of a gRPC call to /x.Svc/Do.
func callHeaders() []byte {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/x.Svc/Do"}, {":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return hb.Bytes()
}

// recordingListener records what is written to the connections it accepts.
type recordingListener struct {
	net.Listener
	mu sync.Mutex
	w  [][]byte
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, l: l}, nil
}

func (l *recordingListener) reset() {
	l.mu.Lock()
	l.w = nil
	l.mu.Unlock()
}

func (l *recordingListener) writes() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w
}

type recordingConn struct {
	net.Conn
	l *recordingListener
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.l.mu.Lock()
	c.l.w = append(c.l.w, bytes.Clone(p))
	c.l.mu.Unlock()
	return c.Conn.Write(p)
}

// TestPingAcks: the ack of a PING that comes with a call goes out with the call's answer, as
// one write, so that grpc-go's BDP pings cost its caller no wake-up of their own; a PING with
// nothing to travel with is acked alone within the hold.
func TestPingAcks(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordingListener{Listener: l}
	up, _ := upstream(t, func(_ any, s grpc.ServerStream) error {
		var req []byte
		if err := s.RecvMsg(&req); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond) // an ack not held would go out meanwhile
		return s.SendMsg(&req)
	})
	r := &proxy.Server{Director: func(*proxy.Request) proxy.Decision { return proxy.Decision{Upstream: up} }}
	proxy.SetAckHold(r, 5*time.Second) // no timer races the answer, however slow the machine
	go r.Serve(rl)
	t.Cleanup(r.Close)

	// A PING and a call in one write, as grpc-go's client sends its BDP ping with a call.
	c := rawCall(t, rl, func(fr *http2.Framer) {
		fr.WritePing(false, [8]byte{1})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: callHeaders(), EndHeaders: true})
		fr.WriteData(1, true, []byte{0, 0, 0, 0, 2, 'h', 'i'})
	})
	defer c.Close()
	var got []string
	for _, w := range rl.writes() {
		var kinds []string
		rf := http2.NewFramer(nil, bytes.NewReader(w))
		for {
			f, err := rf.ReadFrame()
			if err != nil {
				break
			}
			switch f := f.(type) {
			case *http2.PingFrame:
				kinds = append(kinds, "ping ack")
			case *http2.HeadersFrame:
				if f.StreamEnded() {
					kinds = append(kinds, "trailers")
				}
			}
		}
		if len(kinds) > 0 {
			slices.Sort(kinds)
			got = append(got, strings.Join(kinds, "+"))
		}
	}
	if want := []string{"ping ack+trailers"}; !slices.Equal(got, want) {
		t.Errorf("writes %q, want %q", got, want)
	}

	t.Run("alone", func(t *testing.T) {
		r := &proxy.Server{Director: func(*proxy.Request) proxy.Decision { return proxy.Decision{} }}
		proxy.SetAckHold(r, 50*time.Millisecond)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go r.Serve(l)
		t.Cleanup(r.Close)
		c, fr := dialRaw(t, l.Addr().String())
		defer c.Close()
		fr.WritePing(false, [8]byte{7})
		start := time.Now()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("no ack of a lone PING: %v", err)
			}
			if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
				if p.Data != [8]byte{7} {
					t.Errorf("ack data %v, want the PING's", p.Data)
				}
				if d := time.Since(start); d < 40*time.Millisecond {
					t.Errorf("the ack came after %s, before the hold of 50ms", d)
				}
				return
			}
		}
	})
}
