package testservice

import (
	"context"
	"net"

	"github.com/restate-grpc/restate-grpc/internal/rawsock"
)

// Relay copies bytes between each connection accepted on l and a new connection to to, until
// l closes. It is the floor the benchmark holds the sidecar's passthrough against: any proxy
// in the path costs at least this. Reads and writes are plain (no splice), over the sidecar's
// own sockets (rawsock), so that the floor is not above the sidecar for want of them.
func Relay(l net.Listener, to string) error {
	l = rawsock.Listener(l)
	var d rawsock.Dialer
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			u, err := d.DialContext(context.Background(), "tcp", to)
			if err != nil {
				return
			}
			defer u.Close()
			done := make(chan struct{})
			go func() { copyBytes(u, c); u.Close(); close(done) }()
			copyBytes(c, u)
			c.Close()
			<-done
		}()
	}
}

func copyBytes(dst, src net.Conn) {
	b := make([]byte, 32<<10)
	for {
		n, err := src.Read(b)
		if n > 0 {
			if _, err := dst.Write(b[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
