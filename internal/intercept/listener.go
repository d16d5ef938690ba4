package intercept

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/restate-grpc/restate-grpc/internal/rawsock"
)

// Defaults of the Options fields of the same names.
const (
	DefaultDetectTimeout = 500 * time.Millisecond
	DefaultMaxConns      = 1024
)

const (
	// handshakeTimeout bounds reading a CONNECT request once its first bytes came, and
	// writing the answer: a client that trickles them holds a slot no longer.
	handshakeTimeout = 10 * time.Second
	// dialTimeout bounds dialing an opaque destination, as the relay bounds its dials.
	dialTimeout = 10 * time.Second
)

// Options configure a Listener. Zero fields take their defaults.
type Options struct {
	// DetectTimeout is how long a new connection (or a new CONNECT tunnel) may stay silent
	// before it is taken for a server-first protocol and relayed opaque. Default 500ms.
	DetectTimeout time.Duration
	// MaxConns bounds the connections the Listener serves itself: being sniffed, in a CONNECT
	// handshake, or relayed opaque. Past it a new connection is closed at once. Default 1024.
	MaxConns int
	// Also are more listeners served as the inner one, e.g. the IPv6 loopback beside the IPv4
	// one (iptables redirects each family to its own loopback). The Listener owns them too.
	Also []net.Listener
	// Self are the sidecar's other listeners (inbound, health); with the Listener's own
	// addresses, a CONNECT to any of them is refused.
	Self []net.Addr
	// Allow, when set, is asked about every CONNECT target (host as sent, port as digits);
	// a target it refuses is answered 403.
	Allow func(host, port string) bool
	// Logger gets a line for each refused CONNECT and unreachable destination (Info), each
	// connection closed past MaxConns (Warn), and each closed as neither HTTP/2 nor CONNECT
	// nor redirected (Debug). Default slog.Default().
	Logger *slog.Logger
}

// Listener sniffs the connections of an inner listener: Accept returns the h2c ones, the
// rest it serves itself (see the package doc).
type Listener struct {
	inner []net.Listener // the one New was given first
	o     Options
	self  []net.Addr
	log   *slog.Logger

	h2    chan *Conn    // sniffed h2c connections, to Accept
	done  chan struct{} // closed by Close, or when the inner listener fails for good
	ctx   context.Context
	stop  context.CancelFunc
	start sync.Once
	wg    sync.WaitGroup // the accepting goroutine and every serving one

	mu    sync.Mutex
	busy  int                   // connections accepted and served here, up to MaxConns
	conns map[net.Conn]struct{} // those and the connections dialed for them, for Close
	err   error                 // what Accept returns once done is closed
}

// New returns a Listener over inner and Options.Also, which it owns: Close closes them.
func New(inner net.Listener, o Options) *Listener {
	if o.DetectTimeout <= 0 {
		o.DetectTimeout = DefaultDetectTimeout
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	l := &Listener{
		inner: append([]net.Listener{inner}, o.Also...),
		o:     o,
		log:   o.Logger,
		h2:    make(chan *Conn),
		done:  make(chan struct{}),
		conns: map[net.Conn]struct{}{},
	}
	for _, in := range l.inner {
		l.self = append(l.self, in.Addr())
	}
	l.self = append(l.self, o.Self...)
	if l.log == nil {
		l.log = slog.Default()
	}
	l.ctx, l.stop = context.WithCancel(context.Background())
	return l
}

// Accept returns the next h2c connection, a *Conn. The first call starts accepting.
func (l *Listener) Accept() (net.Conn, error) {
	l.start.Do(func() {
		for _, in := range l.inner {
			l.wg.Add(1)
			go l.accept(in)
		}
	})
	select {
	case c := <-l.h2:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		return nil, l.err
	}
}

// Addr is the first inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner[0].Addr() }

// Close closes the inner listeners and every connection served here (not those Accept
// returned), and waits for their goroutines.
func (l *Listener) Close() error {
	l.start.Do(func() {}) // spent: an Accept after Close starts nothing
	err := l.shut(net.ErrClosed)
	l.wg.Wait()
	return err
}

// shut ends the Listener with cause, once, for Accept to return.
func (l *Listener) shut(cause error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil
	}
	l.err = cause
	close(l.done)
	l.stop()
	for c := range l.conns {
		c.Close()
	}
	var errs []error
	for _, in := range l.inner {
		errs = append(errs, in.Close())
	}
	return errors.Join(errs...)
}

// accept takes connections from in until it fails for good (which ends the whole Listener)
// or is closed, and starts serving each, unless MaxConns are being served.
func (l *Listener) accept(in net.Listener) {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := in.Accept()
		if err != nil {
			if !retryable(err) {
				l.shut(err)
				return
			}
			// Out of file descriptors and the like: the connections being served will free
			// some; wait, as net/http does, instead of ending the listener.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("cannot accept a connection; retrying", "error", err, "in", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		if !l.track(c) {
			l.log.Warn("closing a connection: too many are being sniffed or relayed", "remote", c.RemoteAddr().String(), "max", l.o.MaxConns)
			c.Close()
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.serve(c)
		}()
	}
}

// retryable reports whether an Accept error leaves the listener usable: the system short of
// descriptors, buffers or memory, or a connection that failed before it was taken.
func retryable(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO:
		return true
	}
	return false
}

// track counts c among the connections served here, unless there are MaxConns already or
// the Listener is closed. Its serving goroutine releases it.
func (l *Listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil || l.busy >= l.o.MaxConns {
		return false
	}
	l.busy++
	l.conns[c] = struct{}{}
	return true
}

func (l *Listener) release(c net.Conn) {
	l.mu.Lock()
	l.busy--
	delete(l.conns, c)
	l.mu.Unlock()
}

// adopt tracks a connection dialed for a served one, which already has its slot, so that
// Close closes it too; untrack drops it.
func (l *Listener) adopt(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Listener) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// serve sniffs c and gives it its fate.
func (l *Listener) serve(c net.Conn) {
	defer l.release(c)
	p, kind, err := sniff(c, nil, l.o.DetectTimeout)
	if err != nil {
		l.log.Debug("closing a connection that failed before it said anything", "remote", c.RemoteAddr().String(), "error", err)
		c.Close()
		return
	}
	dst, redir := redirected(c)
	switch {
	case kind == kindH2:
		l.handoff(&Conn{Conn: c, prefix: p, dest: dst})
	case redir:
		// Anything else redirected goes where it was going, a CONNECT too: the app was
		// talking to a proxy of its own.
		l.opaque(&Conn{Conn: c, prefix: p, dest: dst})
	case kind == kindConnect:
		l.connect(c, p)
	default:
		l.log.Debug("closing a connection that is neither HTTP/2 nor CONNECT, and was not redirected", "remote", c.RemoteAddr().String(), "first", quote(p))
		c.Close()
	}
}

// handoff passes an h2c connection to Accept, or closes it if the Listener closes first.
func (l *Listener) handoff(c *Conn) {
	select {
	case l.h2 <- c:
	case <-l.done:
		c.Close()
	}
}

// redirected returns where c was going when iptables redirected it here: its original
// destination, when that differs from its local address.
func redirected(c net.Conn) (string, bool) {
	dst, err := rawsock.OriginalDst(c)
	if err != nil {
		return "", false
	}
	local, _ := c.LocalAddr().(*net.TCPAddr)
	if local == nil {
		return "", false
	}
	la := local.AddrPort()
	if dst.Addr().Unmap() == la.Addr().Unmap() && dst.Port() == la.Port() {
		return "", false
	}
	return netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()).String(), true
}

// quote shows the first bytes of a connection in a log line.
func quote(p []byte) string {
	return fmt.Sprintf("%q", p[:min(len(p), 32)])
}
