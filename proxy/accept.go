package proxy

import (
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

// retryable reports whether an Accept error leaves the listener usable: the system short of
// descriptors, buffers or memory, or a connection that failed before it was taken. On Linux
// accept(2) also passes on a pending network error of the new connection, which its man page
// says to treat as EAGAIN.
func retryable(err error) bool {
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
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPERM,
		syscall.EPROTO, syscall.ENOPROTOOPT, syscall.EOPNOTSUPP,
		syscall.ENETDOWN, syscall.ENETUNREACH, syscall.EHOSTDOWN, syscall.EHOSTUNREACH:
		return true
	}
	return false
}

// The defaults of the Limits this file applies, as package config has them.
const (
	defaultPrefaceTimeout = 10 * time.Second
	defaultIdleTimeout    = 5 * time.Minute
)

// limit returns v, or def when v is zero: a Limits field left unset.
func limit[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// origin is what the relay learns of a downstream connection once.
type origin struct {
	dest          string // Request.Destination
	checked, loop bool   // looped
}

// accepted notes that the downstream sent its preface: its first frame must now be its
// SETTINGS (settle). It runs before any other goroutine looks at what it sets.
func (l *link) accepted() {
	l.down.live.handshaking = true
	if l.s.Destination != nil {
		l.from.dest = l.s.Destination(l.down.nc)
	}
}

// settle takes the downstream's first frame, which RFC 9113 (3.4) says is its SETTINGS. The
// preface's read deadline, which bounded the wait for it, ends there, and the idle timer
// starts.
func (l *link) settle(f http2.Frame) error {
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	p := l.down
	p.live.handshaking = false
	if p.dead {
		return nil // closed meanwhile: no timer to leak
	}
	p.nc.SetReadDeadline(time.Time{})
	p.live.idleSince = clock()
	p.live.timer = time.AfterFunc(limit(l.s.Limits.IdleTimeout, defaultIdleTimeout), l.watchDown)
	return nil
}

// watchDown runs from the downstream's timer: a connection that has had no stream for
// IdleTimeout is told GOAWAY (NO_ERROR), and closes.
func (l *link) watchDown() {
	timeout := limit(l.s.Limits.IdleTimeout, defaultIdleTimeout)
	var idle bool
	l.with(func() {
		p := l.down
		if p.dead || l.draining {
			return
		}
		switch quiet := clock() - p.live.idleSince; {
		case len(p.streams) > 0:
			// Streams end without touching the timer: look again soon enough that the
			// close comes at most a quarter of IdleTimeout late.
			p.live.timer.Reset(timeout / 4)
		case quiet < timeout:
			p.live.timer.Reset(timeout - quiet)
		default:
			idle = true
		}
	})
	if idle {
		l.s.log().Debug("closing an idle connection", "remote", l.down.nc.RemoteAddr().String(), "idle", timeout)
		l.drain()
	}
}
