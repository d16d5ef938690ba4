package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync/atomic"
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
