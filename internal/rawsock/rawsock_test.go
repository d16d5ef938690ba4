package rawsock_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/restate-grpc/restate-grpc/internal/rawsock"
)

// pair returns a wrapped client connection and the server end, over loopback.
func pair(t testing.TB) (c, s net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		s, err := rawsock.Listener(l).Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- s
	}()
	var d rawsock.Dialer
	c, err = d.DialContext(t.Context(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s = <-accepted
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func TestWrapped(t *testing.T) {
	c, s := pair(t)
	for _, x := range []net.Conn{c, s} {
		if _, tcp := x.(*net.TCPConn); tcp {
			t.Errorf("%T: a plain *net.TCPConn, want it wrapped", x)
		}
	}
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	if got := rawsock.Wrap(p); got != p {
		t.Errorf("Wrap(pipe) = %T, want the pipe itself", got)
	}
	if got := rawsock.Wrap(c); got != c {
		t.Errorf("Wrap(wrapped) = %T, want it unchanged", got)
	}
}

// TestMethods: a wrapped connection has what its users look for (net/http's CloseWrite, grpc-go's
// syscall.Conn) and nothing that could make its socket blocking or bypass its raw reads and writes.
func TestMethods(t *testing.T) {
	c, _ := pair(t)
	for _, tc := range []struct {
		name string
		has  bool
		want bool
	}{
		{"CloseWrite", is[interface{ CloseWrite() error }](c), true},
		{"SetLinger", is[interface{ SetLinger(int) error }](c), true},
		{"SyscallConn", is[syscall.Conn](c), true},
		// Fd on the file sets the shared file description blocking.
		{"File", is[interface{ File() (*os.File, error) }](c), false},
		// io.Copy would use them instead of Read and Write.
		{"ReadFrom", is[io.ReaderFrom](c), false},
		{"WriteTo", is[io.WriterTo](c), false},
	} {
		if tc.has != tc.want {
			t.Errorf("%T has %s: %v, want %v", c, tc.name, tc.has, tc.want)
		}
	}
}

func is[I any](c net.Conn) bool {
	_, ok := any(c).(I)
	return ok
}

// TestNonBlocking: after each thing a user of a wrapped connection can do with it, its socket is
// still non-blocking. (Close leaves no socket to look at.)
func TestNonBlocking(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(c, s net.Conn) error
	}{
		{"Read", func(c, s net.Conn) error {
			s.Write([]byte{1})
			_, err := c.Read(make([]byte, 1))
			return err
		}},
		{"Write", func(c, s net.Conn) error { _, err := c.Write([]byte{1}); return err }},
		{"SetDeadline", func(c, s net.Conn) error { return c.SetDeadline(time.Now().Add(time.Hour)) }},
		{"SetReadDeadline", func(c, s net.Conn) error { return c.SetReadDeadline(time.Now().Add(time.Hour)) }},
		{"SetWriteDeadline", func(c, s net.Conn) error { return c.SetWriteDeadline(time.Now().Add(time.Hour)) }},
		{"LocalAddr", func(c, s net.Conn) error { c.LocalAddr(); return nil }},
		{"RemoteAddr", func(c, s net.Conn) error { c.RemoteAddr(); return nil }},
		{"CloseWrite", func(c, s net.Conn) error { return c.(interface{ CloseWrite() error }).CloseWrite() }},
		{"SetLinger", func(c, s net.Conn) error { return c.(interface{ SetLinger(int) error }).SetLinger(0) }},
		{"SyscallConn", func(c, s net.Conn) error {
			rc, err := c.(syscall.Conn).SyscallConn()
			if err != nil {
				return err
			}
			return rc.Control(func(uintptr) {})
		}},
		{"OriginalDst", func(c, s net.Conn) error {
			_, err := rawsock.OriginalDst(c)
			if runtime.GOOS != "linux" || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOPROTOOPT) {
				return nil // no connection tracking here: TestOriginalDst checks it where there is
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := pair(t)
			if err := tc.do(c, s); err != nil {
				t.Fatal(err)
			}
			if !nonBlocking(t, c) {
				t.Errorf("after %s the socket is blocking, want O_NONBLOCK", tc.name)
			}
		})
	}

	// The check itself sees what File does to a plain connection.
	t.Run("plain File", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		p, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		f, err := p.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.Fd()
		if nonBlocking(t, p) {
			t.Errorf("a plain connection after File().Fd() is non-blocking, want blocking (the check is blind)")
		}
	})
}

// nonBlocking reports whether c's socket has O_NONBLOCK.
func nonBlocking(t *testing.T, c net.Conn) bool {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	return flags&unix.O_NONBLOCK != 0
}

// TestTransfer moves more than the socket buffers hold both ways at once, so writes fill the
// send buffer and wait, and reads find nothing and wait.
func TestTransfer(t *testing.T) {
	c, s := pair(t)
	want := make([]byte, 16<<20)
	rand.Read(want)
	echoed := make(chan error, 1)
	go func() {
		_, err := io.Copy(s, s)
		echoed <- err
	}()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(c)
		got <- b
	}()
	n, err := c.Write(want)
	if n != len(want) || err != nil {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(want))
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := <-echoed; err != nil {
		t.Fatalf("echo: %v", err)
	}
	s.Close()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("echoed %d bytes, not the %d written", len(b), len(want))
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(c, s net.Conn) (int, error)
		want func(error) bool
	}{
		{"read: peer closed", func(c, s net.Conn) (int, error) {
			s.Close()
			return c.Read(make([]byte, 10))
		}, func(err error) bool { return err == io.EOF }},
		{"read: deadline", func(c, s net.Conn) (int, error) {
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			return c.Read(make([]byte, 10))
		}, isTimeout},
		{"read: closed", func(c, s net.Conn) (int, error) {
			c.Close()
			return c.Read(make([]byte, 10))
		}, func(err error) bool { return errors.Is(err, net.ErrClosed) }},
		{"read: closed while waiting", func(c, s net.Conn) (int, error) {
			time.AfterFunc(20*time.Millisecond, func() { c.Close() })
			return c.Read(make([]byte, 10))
		}, func(err error) bool { return errors.Is(err, net.ErrClosed) }},
		{"write: deadline with the buffers full", func(c, s net.Conn) (int, error) {
			c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			return c.Write(make([]byte, 64<<20))
		}, isTimeout},
		{"write: closed", func(c, s net.Conn) (int, error) {
			c.Close()
			return c.Write([]byte("x"))
		}, func(err error) bool { return errors.Is(err, net.ErrClosed) }},
		{"write: peer reset", func(c, s net.Conn) (int, error) {
			s.(interface{ SetLinger(int) error }).SetLinger(0)
			s.Close()
			if err := resetArrived(c); err != nil {
				return 0, err
			}
			return c.Write([]byte("x"))
		}, func(err error) bool { return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := pair(t)
			n, err := tc.do(c, s)
			if !tc.want(err) {
				t.Errorf("got %d, %v (%T); not the error wanted", n, err, err)
			}
			var oe *net.OpError
			if err != io.EOF && !errors.As(err, &oe) {
				t.Errorf("got %T, want a *net.OpError as net.TCPConn returns", err)
			}
		})
	}
}

// resetArrived waits until the peer's reset has reached c: its socket polls readable, with an
// error pending, and nothing read.
func resetArrived(c net.Conn) error {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	err = rc.Control(func(fd uintptr) {
		for {
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 5000)
			if err == unix.EINTR {
				continue
			}
			if perr = err; err == nil && n == 0 {
				perr = errors.New("no reset after 5s")
			}
			return
		}
	})
	if err != nil {
		return err
	}
	return perr
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

// TestHappensBefore: what a goroutine did before writing is seen by the goroutine that reads
// those bytes, as with net.TCPConn. Under the race detector (make test) the access to x is
// reported as a race unless Read and Write tell the detector so.
func TestHappensBefore(t *testing.T) {
	c, s := pair(t)
	x := 0
	go func() {
		x = 1
		c.Write([]byte{1})
	}()
	if _, err := s.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if got, want := x, 1; got != want {
		t.Errorf("x = %d after the read, want %d", got, want)
	}
}
