package proxy

import (
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A grpc-go server (keepalive.EnforcementPolicy, by default) counts a strike for each PING
// that comes within MinTime (5 minutes) of the one before, forgives them all once it has
// written a call's HEADERS or DATA, and closes the connection (GOAWAY ENHANCE_YOUR_CALM,
// "too_many_pings") at the third strike; the first PING after a call's frames costs none.
// So the relay sends at most unforgivenPings in a row without a call's frame from the
// upstream, and past them waits patientPing between two: a call that stays silent for long
// is then checked every 5 minutes instead of every KeepaliveInterval, rather than cut.
const (
	unforgivenPings = 2
	patientPing     = 5*time.Minute + 5*time.Second // MinTime, and room for the pings' delays
)

// keepalivePing is the payload of the relay's keepalive PINGs.
var keepalivePing = [8]byte{'k', 'e', 'e', 'p', 'a', 'l', 'i', 'v'}

// epoch is the origin of clock.
var epoch = time.Now()

// clock is a monotonic time, cheaper to take than time.Now.
func clock() time.Duration { return time.Since(epoch) }

// liveness is what a peer's timer watches: one timer per connection, whatever its traffic.
// readAt is written by the peer's reader once per read from the socket; the rest is guarded
// by link.mu.
type liveness struct {
	timer       *time.Timer
	readAt      atomic.Int64  // clock when a frame was last read from the peer
	idleSince   time.Duration // clock when its last stream ended, or it connected
	handshaking bool          // a downstream whose SETTINGS have not come yet
	frames      uint64        // frames read from the peer
	pinging     bool          // a keepalive PING is unanswered
	pingAt      time.Duration // clock when the last keepalive PING went
	pingFrames  uint64        // frames when it went
	strikes     int           // keepalive PINGs since the upstream last sent a call's frame
}

func (lv *liveness) stop() {
	if lv.timer != nil {
		lv.timer.Stop()
	}
}

// heard notes a frame read from p. It runs for every frame, so it must stay cheap.
func (p *peer) heard(f http2.Frame) error {
	if p.live.handshaking {
		return p.l.settle(f)
	}
	p.live.frames++
	if t := f.Header().Type; t == http2.FrameData || t == http2.FrameHeaders {
		p.live.strikes = 0
	}
	return nil
}

// watch starts the timer of p, an upstream that has just connected.
func (l *link) watch(p *peer) {
	now := clock()
	p.live.readAt.Store(int64(now))
	p.live.idleSince = now
	next := min(l.lim.KeepaliveInterval, l.lim.UpstreamIdleTimeout)
	p.live.timer = time.AfterFunc(next, func() { l.with(func() { l.watchUp(p) }) })
}

// watchUp runs from the timer of upstream p, with the link locked. While p has streams, it
// pings p once p has been silent for KeepaliveInterval, and fails p's calls when nothing
// comes back within KeepaliveTimeout: a half-open connection (a node gone without a FIN)
// would hold them without bound. Without streams it does not ping (a grpc-go server takes
// that as abuse), and it closes p after UpstreamIdleTimeout.
func (l *link) watchUp(p *peer) {
	if p.dead || p.closing {
		return
	}
	lv := &p.live
	interval := l.lim.KeepaliveInterval
	timeout := l.lim.KeepaliveTimeout
	idle := l.lim.UpstreamIdleTimeout
	now, readAt := clock(), time.Duration(lv.readAt.Load())
	if lv.pinging {
		switch {
		case lv.frames != lv.pingFrames:
			lv.pinging = false // any frame read since the PING says the peer is there
		case now-lv.pingAt < timeout:
			lv.timer.Reset(lv.pingAt + timeout - now)
			return
		default:
			l.s.log().Warn("upstream did not answer a keepalive ping", "upstream", p.name, "calls", len(p.streams), "timeout", timeout)
			l.failUpstream(p, status.Newf(codes.Unavailable, "upstream %s did not answer a keepalive ping within %s", p.name, timeout))
			p.nc.Close() // its reader ends; new streams dial a new connection
			return
		}
	}
	next := interval
	switch {
	case len(p.streams) == 0:
		if now-lv.idleSince >= idle {
			l.s.log().Debug("closing an idle upstream connection", "upstream", p.name, "idle", idle)
			p.fw.WriteGoAway(0, http2.ErrCodeNo, nil)
			l.unlist(p)
			p.closing = true // closed once the GOAWAY is written
			p.touch()
			return
		}
		next = min(interval, lv.idleSince+idle-now)
	case p.key == localKey:
		// In process: it cannot be half-open.
	case now-readAt < interval:
		next = readAt + interval - now
	case lv.strikes >= unforgivenPings && now-lv.pingAt < patientPing:
		next = lv.pingAt + patientPing - now
	default:
		p.fw.WritePing(false, keepalivePing)
		p.touch()
		lv.pinging, lv.pingAt, lv.pingFrames = true, now, lv.frames
		lv.strikes++
		next = min(interval, timeout) // as grpc-go: the next PING need not wait for the timeout
	}
	if len(p.streams) > 0 {
		// Streams end without touching the timer: look again soon enough that the idle
		// close comes at most a quarter of UpstreamIdleTimeout late.
		next = min(next, idle/4)
	}
	lv.timer.Reset(next)
}
