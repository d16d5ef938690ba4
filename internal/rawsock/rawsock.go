package rawsock

import (
	"context"
	"net"
	"syscall"
	"time"
)

// Wrap returns c with raw reads and writes when c is a TCP connection, else c itself.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		// Only a TCPConn without a descriptor fails here: it has no socket to read or to make
		// blocking.
		return tc
	}
	return &conn{tc: tc, rc: rc}
}

// conn is a TCP connection whose Read and Write make raw system calls (conn_linux.go). It holds
// the *net.TCPConn rather than embedding it so that File is not among its methods: Fd on the
// returned file would make the socket, which it shares, blocking, and a raw read of a blocking
// socket holds its thread in the kernel. Nor are ReadFrom and WriteTo, with which io.Copy would
// bypass the raw calls. What is left cannot change the socket's file status flags.
type conn struct {
	tc *net.TCPConn
	rc syscall.RawConn
}

func (c *conn) Close() error                       { return c.tc.Close() }
func (c *conn) LocalAddr() net.Addr                { return c.tc.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr               { return c.tc.RemoteAddr() }
func (c *conn) SetDeadline(t time.Time) error      { return c.tc.SetDeadline(t) }
func (c *conn) SetReadDeadline(t time.Time) error  { return c.tc.SetReadDeadline(t) }
func (c *conn) SetWriteDeadline(t time.Time) error { return c.tc.SetWriteDeadline(t) }

// CloseWrite shuts down the writing side, as net/http does before closing a connection.
func (c *conn) CloseWrite() error { return c.tc.CloseWrite() }

// SetLinger sets SO_LINGER, as on net.TCPConn.
func (c *conn) SetLinger(sec int) error { return c.tc.SetLinger(sec) }

// SyscallConn gives the socket to grpc-go's channelz and credentials, and to OriginalDst. A
// syscall.RawConn hands its callbacks the descriptor without touching its flags.
func (c *conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// Listener returns l with its accepted connections wrapped.
func Listener(l net.Listener) net.Listener { return listener{l} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// Dialer dials wrapped connections.
type Dialer struct{ net.Dialer }

// DialContext connects to addr on network, as net.Dialer does, and wraps the connection.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}
