package intercept

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/restate-grpc/restate-grpc/internal/rawsock"
)

// tunnelBuffer is what each direction of an opaque tunnel holds: bytes read from one side
// wait here until the other side has taken them.
const tunnelBuffer = 16 << 10

var buffers = sync.Pool{New: func() any { b := make([]byte, tunnelBuffer); return &b }}

// opaque relays c to its destination, which it dials, byte for byte in both directions until
// both have ended. The end of one direction (EOF) is passed on as a half-close, so a client
// that half-closes after its upload still gets the answer; an error in either ends both.
func (l *Listener) opaque(c *Conn) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(l.ctx, dialTimeout)
	var d rawsock.Dialer
	up, err := d.DialContext(ctx, "tcp", c.dest)
	cancel()
	if err != nil {
		l.log.Info("cannot reach the destination of an opaque connection", "remote", c.RemoteAddr().String(), "destination", c.dest, "error", err)
		return
	}
	defer up.Close()
	if !l.adopt(up) {
		return
	}
	defer l.untrack(up)
	l.log.Debug("relaying an opaque connection", "remote", c.RemoteAddr().String(), "destination", c.dest)
	// The upload runs on a goroutine of its own, which this one waits for: each direction
	// blocks in its reads independently of the other.
	uploaded := make(chan struct{})
	go func() {
		defer close(uploaded)
		pump(up, c)
	}()
	pump(c, up)
	<-uploaded
}

// pump copies src to dst until src ends, then half-closes dst. On an error either way it
// closes both, so that the other direction ends too.
func pump(dst, src net.Conn) {
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				dst.Close()
				src.Close()
				return
			}
		}
		switch {
		case errors.Is(rerr, io.EOF):
			if closeWrite(dst) != nil {
				src.Close()
			}
			return
		case rerr != nil:
			dst.Close()
			src.Close()
			return
		}
	}
}

// closeWrite half-closes c, or closes it when it cannot be half-closed.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
