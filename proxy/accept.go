package proxy

import (
	"time"

	"golang.org/x/net/http2"
)

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
	p.live.timer = time.AfterFunc(l.lim.IdleTimeout, l.watchDown)
	return nil
}

// watchDown runs from the downstream's timer: a connection that has had no stream for
// IdleTimeout is told GOAWAY (NO_ERROR), and closes.
func (l *link) watchDown() {
	timeout := l.lim.IdleTimeout
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
