package proxy

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/restate-grpc/restate-grpc/internal/rawsock"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/status"
)

// ErrServerClosed is what Serve returns after Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

// Request is what the Director sees of a new stream.
type Request struct {
	Method    string // :path, "/pkg.Service/Method"
	Authority string
	Header    []hpack.HeaderField // every field, pseudo-headers first
	// Destination is where the caller's connection was going: the CONNECT target or the
	// original destination of a redirected connection, as Server.Destination tells; empty
	// without it.
	Destination string
}

// Get returns the last value of the header field name (lower case).
func (r *Request) Get(name string) (string, bool) {
	for i := len(r.Header) - 1; i >= 0; i-- {
		if r.Header[i].Name == name {
			return r.Header[i].Value, true
		}
	}
	return "", false
}

// IsGRPC reports whether the request is a gRPC call (a POST of application/grpc).
func (r *Request) IsGRPC() bool {
	m, _ := r.Get(":method")
	ct, _ := r.Get("content-type")
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return m == "POST" && ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// Decision is the Director's answer for one stream. Exactly one of Local, Upstream and Status
// is set.
type Decision struct {
	Local    bool           // hand the stream to the server behind Server.Local
	Upstream string         // relay the stream to this host:port
	Status   *status.Status // answer with this status and nothing else

	// Header is added to the request headers of a relayed stream, in place of any fields of
	// the same names the caller sent.
	Header []hpack.HeaderField
	// MaxRequestMessage, when above 0, bounds each request message of a relayed stream: a larger one ends the call with RESOURCE_EXHAUSTED before it is passed on.
	MaxRequestMessage int
}

// Server relays the streams of the connections it accepts.
type Server struct {
	// Director decides each new stream. It runs on the connection's reading goroutine with the
	// connection locked, so it must be quick and must not block: the package doc has its
	// contract.
	Director func(*Request) Decision
	// Local connects to the local server, for Decision.Local.
	Local func(ctx context.Context) (net.Conn, error)
	// Dial connects to an upstream; default a net.Dialer with DialTimeout.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// WriteTimeout bounds each write to a connection; default DefaultWriteTimeout. A peer that
	// stops reading would otherwise hold up every call of the connection that writes to it:
	// past the timeout its connection is closed and its calls fail.
	WriteTimeout time.Duration
	// Limits bound what any peer can make the relay hold; zero fields take their defaults.
	Limits Limits
	Logger *slog.Logger
	// Destination, when set, tells once per accepted connection where it was going (see
	// Request.Destination), before its first stream.
	Destination func(net.Conn) string
	// Observe, when set, is called as each stream the Director decides starts, with its
	// Request and Decision, with the connection locked, as the Director is; the func it
	// returns, unless nil, as the stream ends, once the relay has written what it wrote on the
	// stream's end, without the lock. Both run on whichever of the connection's goroutines
	// started or ended the stream: they must be quick and must not block (hand anything slow
	// to a goroutine of your own). Streams refused before the Director runs are not observed.
	Observe func(*Request, Decision) func(StreamEnd)
	// Refused, when set, is told of each stream refused before the Director sees it, with
	// its RST_STREAM's code: REFUSED_STREAM past MaxConcurrentStreams or while draining,
	// FRAME_SIZE_ERROR for a header list over MaxHeaderListSize. It runs as Observe does.
	Refused func(http2.ErrCode)
	// Broke, when set, is told of each connection the relay closes because its peer broke
	// HTTP/2 or a limit (ENHANCE_YOUR_CALM: resets or empty frames past
	// MaxResetsPerSecond), with the GOAWAY's code; upstream says which side the peer was.
	// It runs on the connection's reading goroutine, and must not block.
	Broke func(upstream bool, code http2.ErrCode)

	heldAcks time.Duration // ackHold, unless a test sets it

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	links     map[*link]struct{}
	closing   bool
	wg        sync.WaitGroup
}

// Limits bound what a downstream or upstream peer can make the relay hold. Zero fields take
// their values from DefaultLimits.
type Limits struct {
	// MaxConcurrentStreams is advertised to each downstream connection; a stream past it is
	// refused with REFUSED_STREAM.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a header block from either side, as RFC 9113 counts it, and
	// is advertised to both.
	MaxHeaderListSize uint32
	// MaxResetsPerSecond is how many streams a downstream connection may reset, or have
	// refused, per second on average over 10 s before GOAWAY ENHANCE_YOUR_CALM closes it.
	// Empty DATA frames, from either side, count alike.
	MaxResetsPerSecond int
	// PrefaceTimeout bounds how long a new connection takes to send its preface and SETTINGS.
	PrefaceTimeout time.Duration
	// IdleTimeout closes a downstream connection that has had no stream for this long.
	IdleTimeout time.Duration
	// UpstreamIdleTimeout closes an upstream connection that has had no stream for this long.
	UpstreamIdleTimeout time.Duration
	// KeepaliveInterval is how long an upstream may be silent before it is pinged, and
	// KeepaliveTimeout how long its ack may take before its calls fail with UNAVAILABLE.
	KeepaliveInterval, KeepaliveTimeout time.Duration
}

const (
	// DialTimeout bounds connecting to an upstream.
	DialTimeout = 10 * time.Second
	// DefaultWriteTimeout is the default Server.WriteTimeout.
	DefaultWriteTimeout = 10 * time.Second
)

// Serve accepts connections on l and relays their streams until Shutdown or Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
		s.links = map[*link]struct{}{}
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			if !rawsock.AcceptRetryable(err) {
				return err
			}
			// Out of file descriptors and the like: the connections being served will free
			// some; wait, as net/http does, instead of ending the sidecar.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log().Warn("cannot accept a connection; retrying", "error", err, "in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !s.track(c) {
			c.Close()
			return ErrServerClosed
		}
	}
}

// track starts serving c, unless the server is closing.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	l := newLink(s, c)
	s.links[l] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		l.serve()
		s.mu.Lock()
		delete(s.links, l)
		s.mu.Unlock()
	}()
	return true
}

// Shutdown stops accepting, tells every connection that no new stream will be taken
// (GOAWAY), and waits for their streams to end, or for ctx, after which it closes them. It
// returns by ctx's deadline whatever the peers do: each GOAWAY is written by a goroutine of
// its own, which a peer that does not read holds up until the write deadline or the close.
func (s *Server) Shutdown(ctx context.Context) error {
	var drains sync.WaitGroup
	for _, l := range s.stop() {
		drains.Go(l.drain)
	}
	defer drains.Wait() // ends at the latest with the connections
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
	}
}

// Close closes every listener and connection at once.
func (s *Server) Close() {
	for _, l := range s.stop() {
		l.closeAll()
	}
}

// stop closes the listeners and returns the connections. It writes nothing to them: under
// s.mu, a write to a peer that does not read would hold up every other user of s.mu.
func (s *Server) stop() []*link {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	return slices.Collect(maps.Keys(s.links))
}

func (s *Server) writeTimeout() time.Duration {
	if s.WriteTimeout > 0 {
		return s.WriteTimeout
	}
	return DefaultWriteTimeout
}

func (s *Server) ackHold() time.Duration {
	if s.heldAcks > 0 {
		return s.heldAcks
	}
	return ackHold
}

func (s *Server) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) dial(ctx context.Context, d Decision) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	switch {
	case d.Local && s.Local == nil:
		return nil, errors.New("no local server (Server.Local is not set)")
	case d.Local:
		return s.Local(ctx)
	case s.Dial != nil:
		return remember(s.Dial(ctx, d.Upstream))
	}
	var nd net.Dialer
	return remember(nd.DialContext(ctx, "tcp", d.Upstream))
}

// readFrames reads r's frames into handle, which runs with l locked, and flushes what the
// handling wrote whenever nothing more is buffered: a burst of frames costs one write per peer.
// A StreamError, from the framer or handle, goes to bad; any other error ends the reading.
func (l *link) readFrames(self *peer, handle func(http2.Frame) error, bad func(http2.StreamError)) error {
	br := bufio.NewReaderSize(self.nc, 32<<10)
	fr := http2.NewFramer(nil, br)
	fr.SetMaxReadFrameSize(maxFrameSize)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = l.lim.MaxHeaderListSize
	var t touched
	for {
		f, err := fr.ReadFrame()
		if err == nil {
			l.locked(&t, func() {
				if err = self.heard(f); err == nil {
					err = handle(f)
				}
			})
		}
		if se, ok := err.(http2.StreamError); ok {
			l.locked(&t, func() { bad(se) })
		} else if err != nil {
			t.flush(self)
			return readError(fr, err)
		}
		if br.Buffered() == 0 {
			if self != l.down { // for keepalive: once per read from the socket, not per frame
				self.live.readAt.Store(int64(clock()))
			}
			t.flush(self)
		}
	}
}
