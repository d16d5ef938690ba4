package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// localKey names the local server among a link's upstreams; no host:port looks like it.
const localKey = "\x00local"

// link is one accepted (downstream) connection with the upstream connections its streams
// opened. Its goroutines: the downstream reader (serve), and one per upstream that dials and
// then reads it. All state is guarded by mu.
type link struct {
	s      *Server
	lim    Limits          // s.Limits, defaults applied
	ctx    context.Context // ends when the link closes; bounds dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // upstream goroutines

	mu       sync.Mutex
	t        *touched // the flush list of the goroutine holding mu
	down     *peer
	ups      map[string][]*peer // the connections new streams to a destination may take
	limits   map[string]limits  // what a destination's connections last said of their limits
	peers    map[*peer]struct{} // every upstream, draining ones too
	draining bool
	from     origin // what is known of the connection: accept.go
	// gapLo and gapHi bound the downstream's stream ids last skipped (RFC 9113 5.1.1): a
	// HEADERS below the last id is a closed stream's, unless it falls in the gap.
	gapLo, gapHi uint32
}

func newLink(s *Server, c net.Conn) *link {
	l := &link{s: s, lim: s.Limits.withDefaults(), ups: map[string][]*peer{}, limits: map[string]limits{}, peers: map[*peer]struct{}{}}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.down = newPeer(l, "downstream", c)
	return l
}

// limits are the SETTINGS of an upstream that bound what the relay sends it.
type limits struct{ maxStreams, maxHeaderList uint32 }

// stream is one call: the downstream's stream and its twin, with the same id, on up.
type stream struct {
	id          uint32
	up          *peer
	req         half // downstream -> up
	resp        half // up -> downstream
	respHeaders bool // the response headers went downstream
	rstAfter    bool // up reset the stream (NO_ERROR) while its trailers still waited for window
	limit       msgLimit
	obs         *observed // nil unless Server.Observe watches it; then &observed
	// observed is the stream's observation, kept in the stream so that observing a stream
	// allocates nothing of its own.
	observed observed
}

// half is one direction of a stream.
type half struct {
	from, to *peer
	win      int64  // what to lets us send on this stream
	buf      []byte // received from from, not yet admitted by to's windows
	end      bool   // from ended its side: END_STREAM follows buf
	trailers []hpack.HeaderField
	done     bool   // END_STREAM went to to
	credit   uint32 // bytes passed on, not yet credited to from for this stream
	bytes    int64  // DATA taken from from to pass on, for the observer
}

// resetUp resets the upstream's twin of s, if it has one.
func (s *stream) resetUp(code http2.ErrCode) {
	if s.up != nil {
		s.up.writeRST(s.id, code)
	}
}

// toward returns the half that carries data to p; from the half that carries p's data.
func (s *stream) toward(p *peer) *half {
	if p == s.up {
		return &s.req
	}
	return &s.resp
}

func (s *stream) from(p *peer) *half {
	if p == s.up {
		return &s.resp
	}
	return &s.req
}

// with runs fn holding the link, then flushes what fn framed.
func (l *link) with(fn func()) {
	var t touched
	l.locked(&t, fn)
	t.flush(nil)
}

// locked runs fn holding the link, with t as the flush list. The deferred unlock lets a panic
// in fn crash the process, as it should, instead of leaving the link locked forever.
func (l *link) locked(t *touched, fn func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t = t
	defer func() { l.t = nil }()
	fn()
}

// serve reads the downstream connection until it ends, then closes the link.
func (l *link) serve() {
	defer l.wg.Wait()
	defer l.closeAll()
	c := l.down.nc
	c.SetReadDeadline(time.Now().Add(l.lim.PrefaceTimeout)) // until its SETTINGS: settle
	if err := readPreface(c); err != nil {
		l.s.log().Debug("connection is not HTTP/2", "remote", c.RemoteAddr().String(), "error", err)
		return
	}
	l.accepted()
	l.with(func() {
		l.down.writeSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: l.lim.MaxConcurrentStreams})
	})
	err := l.readFrames(l.down, l.onDown, l.badDown)
	var ce connError
	if errors.As(err, &ce) {
		l.s.log().Debug("outbound connection broke the protocol", "remote", c.RemoteAddr().String(), "error", err)
		l.broke(false, ce.code)
		l.with(func() {
			l.down.fw.WriteGoAway(l.down.lastID, ce.code, []byte(ce.reason))
			l.down.closing = true
			l.down.touch()
		})
	}
}

// refuseStream refuses stream id before the Director sees it, and counts it towards the
// connection's reset limit.
func (l *link) refuseStream(id uint32, code http2.ErrCode) error {
	l.down.writeRST(id, code)
	if l.s.Refused != nil {
		l.s.Refused(code)
	}
	return l.spend(l.down, "refused streams")
}

// broke tells Server.Broke of a connection closed for what its peer did.
func (l *link) broke(upstream bool, code http2.ErrCode) {
	if l.s.Broke != nil {
		l.s.Broke(upstream, code)
	}
}

// readPreface reads the client preface, and gives up at the first byte that differs.
func readPreface(c net.Conn) error {
	buf := make([]byte, len(http2.ClientPreface))
	for have := 0; have < len(buf); {
		n, err := c.Read(buf[have:])
		have += n
		if string(buf[:have]) != http2.ClientPreface[:have] {
			return fmt.Errorf("no HTTP/2 client preface: got %q", buf[:have])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// drain sends GOAWAY: the streams it has go on, new ones are refused. The link closes when
// the last one ends.
func (l *link) drain() {
	l.with(func() {
		if l.draining || l.down.dead {
			return
		}
		l.draining = true
		l.down.fw.WriteGoAway(l.down.lastID, http2.ErrCodeNo, nil)
		l.down.touch()
		if len(l.down.streams) == 0 {
			l.down.closing = true
		}
	})
}

// closeAll closes the link's connections; their readers end.
func (l *link) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cancel()
	l.abandon()
	for _, p := range append(l.upstreams(), l.down) {
		p.dead = true
		if p.ackTimer != nil {
			p.ackTimer.Stop()
		}
		p.live.stop()
		if p.nc != nil {
			p.nc.Close()
		}
	}
}

func (l *link) upstreams() []*peer {
	ps := make([]*peer, 0, len(l.peers))
	for p := range l.peers {
		ps = append(ps, p)
	}
	return ps
}

// onDown handles a frame from the downstream. A StreamError it returns resets that stream;
// any other error ends the connection.
func (l *link) onDown(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return l.downHeaders(f)
	case *http2.DataFrame:
		return l.onData(l.down, f)
	case *http2.RSTStreamFrame:
		if l.down.idle(f.StreamID) {
			return connErrorf(http2.ErrCodeProtocol, "RST_STREAM on idle stream %d", f.StreamID)
		}
		if s := l.down.streams[f.StreamID]; s != nil {
			s.resetUp(f.ErrCode)
			l.drop(s)
		}
		return l.spend(l.down, "resets")
	case *http2.PushPromiseFrame:
		return connErrorf(http2.ErrCodeProtocol, "PUSH_PROMISE from a client")
	}
	return l.control(l.down, f)
}

func (l *link) badDown(se http2.StreamError) {
	if id := se.StreamID; id%2 == 1 && id > l.down.lastID {
		l.down.lastID = id // a malformed HEADERS opened its stream, and closed it
	}
	if s := l.down.streams[se.StreamID]; s != nil {
		s.resetUp(http2.ErrCodeCancel)
		l.drop(s)
	}
	l.down.writeRST(se.StreamID, se.Code)
}

func (l *link) onUp(p *peer, f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return l.upHeaders(p, f)
	case *http2.DataFrame:
		return l.onData(p, f)
	case *http2.RSTStreamFrame:
		return l.upReset(p, f)
	case *http2.GoAwayFrame:
		l.upGoAway(p, f)
		return nil
	case *http2.PushPromiseFrame:
		return connErrorf(http2.ErrCodeProtocol, "PUSH_PROMISE, with push disabled")
	}
	return l.control(p, f)
}

func (l *link) badUp(p *peer, se http2.StreamError) {
	p.writeRST(se.StreamID, se.Code)
	if s := p.streams[se.StreamID]; s != nil {
		msg := se.Code.String()
		if se.Cause != nil {
			msg = se.Cause.Error()
		}
		l.end(s, status.Newf(codes.Internal, "upstream %s broke the protocol: %s", p.name, msg))
	}
}

// control handles the frames about a connection rather than a call.
func (l *link) control(p *peer, f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if err := p.settings(f); err != nil {
			return err
		}
		if !f.IsAck() {
			l.pushAll(p)
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			p.ack(f.Data) // held for company: see peer.acks
		}
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return streamErrorf(f.StreamID, http2.ErrCodeProtocol, "stream %d depends on itself", f.StreamID)
		}
	case *http2.WindowUpdateFrame:
		inc := int64(f.Increment)
		if f.StreamID == 0 {
			if p.sendWin+inc > maxWindow {
				return connErrorf(http2.ErrCodeFlowControl, "WINDOW_UPDATE overflows the connection window")
			}
			p.sendWin += inc
			l.pushAll(p)
			return nil
		}
		s := p.streams[f.StreamID]
		if s == nil {
			if p.idle(f.StreamID) {
				return connErrorf(http2.ErrCodeProtocol, "WINDOW_UPDATE on idle stream %d", f.StreamID)
			}
			return nil // a closed stream's, which RFC 9113 (6.9) allows
		}
		h := s.toward(p)
		if h.win+inc > maxWindow {
			return streamErrorf(s.id, http2.ErrCodeFlowControl, "WINDOW_UPDATE overflows the window of stream %d", s.id)
		}
		h.win += inc
		l.push(s, h, nil)
	}
	return nil
}

// downHeaders starts a stream, or ends a request that closes with a header block. Stream ids
// and states are checked as RFC 9113 (5.1, 8.1) says.
func (l *link) downHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if s := l.down.streams[id]; s != nil {
		switch {
		case s.req.end:
			return streamErrorf(id, http2.ErrCodeStreamClosed, "HEADERS on half-closed stream %d", id)
		case !f.StreamEnded():
			return streamErrorf(id, http2.ErrCodeProtocol, "trailers without END_STREAM on stream %d", id)
		case len(f.PseudoFields()) > 0:
			return streamErrorf(id, http2.ErrCodeProtocol, "pseudo-header in trailers on stream %d", id)
		case f.Truncated:
			return streamErrorf(id, http2.ErrCodeFrameSize, "trailers over SETTINGS_MAX_HEADER_LIST_SIZE on stream %d", id)
		}
		// gRPC callers send no trailers; a header block that ends the request just ends it.
		s.req.end = true
		l.push(s, &s.req, nil)
		return nil
	}
	switch last := l.down.lastID; {
	case id%2 == 0:
		return connErrorf(http2.ErrCodeProtocol, "HEADERS on even stream %d", id)
	case id <= last && l.gapLo < id && id < l.gapHi:
		return connErrorf(http2.ErrCodeProtocol, "stream %d after stream %d", id, last)
	case id <= last:
		return connErrorf(http2.ErrCodeStreamClosed, "HEADERS on closed stream %d", id)
	case id > last+2:
		l.gapLo, l.gapHi = last, id
	}
	l.down.lastID = id
	ended := f.StreamEnded()
	switch {
	case f.Truncated:
		// As grpc-go's server answers a header list over its limit.
		return l.refuseStream(id, http2.ErrCodeFrameSize)
	case l.draining || uint32(len(l.down.streams)) >= l.lim.MaxConcurrentStreams:
		return l.refuseStream(id, http2.ErrCodeRefusedStream)
	}
	if err := checkRequest(f); err != nil {
		return err
	}
	d, obs, observing := l.decide(f)
	if d.Status != nil {
		l.answer(id, d.Status, ended)
		return nil
	}
	p := l.upstream(d)
	// refuse answers a stream the relay cannot pass on; its observer sees it end so.
	refuse := func(st *status.Status) error {
		l.answer(id, st, ended)
		if observing {
			l.tell(obs.end, StreamEnd{Code: st.Code(), HasCode: true, Duration: clock() - obs.start})
		}
		return nil
	}
	if p == nil {
		_, name := d.dest()
		return refuse(status.Newf(codes.ResourceExhausted, "upstream %s: %d connections, each at the stream limit it set", name, maxUpstreamConns))
	}
	fields := withHeader(f.Fields, d.Header)
	if n, ok := p.fits(fields); !ok {
		return refuse(status.Newf(codes.ResourceExhausted, "request header list of %d bytes is larger than upstream %s accepts (%d)", n, p.name, p.maxHeaderList))
	}
	s := &stream{id: id, up: p, limit: msgLimit{max: d.MaxRequestMessage}, observed: obs}
	if observing {
		s.obs = &s.observed
	}
	s.req = half{from: l.down, to: p, win: p.initWin, end: ended, done: ended}
	s.resp = half{from: p, to: l.down, win: l.down.initWin}
	l.down.streams[id] = s
	p.streams[id] = s
	p.lastID = id
	p.writeHeaders(id, fields, ended)
	return nil
}

// answer ends a stream that is not relayed with st, and stops the caller's request if it
// is still sending.
func (l *link) answer(id uint32, st *status.Status, ended bool) {
	l.down.writeStatus(id, st, false)
	if !ended {
		l.down.writeRST(id, http2.ErrCodeNo)
	}
}

// upstream returns the connection a stream for d takes, dialing one when none has room: an
// upstream's SETTINGS_MAX_CONCURRENT_STREAMS bounds each connection, not the calls. It
// returns nil when maxUpstreamConns are all full.
func (l *link) upstream(d Decision) *peer {
	key, name := d.dest()
	for _, p := range l.ups[key] {
		if uint32(len(p.streams)) < p.maxStreams {
			return p
		}
	}
	if len(l.ups[key]) >= maxUpstreamConns {
		return nil
	}
	p := newPeer(l, name, nil)
	p.key = key
	if n, ok := l.limits[key]; ok {
		// Until its own SETTINGS come, as its siblings said.
		p.maxStreams, p.maxHeaderList = n.maxStreams, n.maxHeaderList
	}
	p.out.Write([]byte(http2.ClientPreface))
	p.writeSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	l.ups[key] = append(l.ups[key], p)
	l.peers[p] = struct{}{}
	l.wg.Add(1)
	go l.dialUpstream(p, d)
	return p
}

// dest returns d's key in link.ups, and its name for messages.
func (d Decision) dest() (key, name string) {
	if d.Local {
		return localKey, "the local server"
	}
	return d.Upstream, d.Upstream
}

// dialUpstream connects p, starts its reader, and sends what its streams framed meanwhile.
// The reader starts first: over an in-memory pipe, both ends write their preface at once.
func (l *link) dialUpstream(p *peer, d Decision) {
	defer l.wg.Done()
	nc, err := l.s.dial(l.ctx, d)
	l.with(func() {
		if err == nil && p.dead {
			nc.Close()
			err = net.ErrClosed
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.s.log().Warn("cannot connect to upstream", "upstream", p.name, "calls", len(p.streams), "error", err)
			}
			l.failUpstream(p, status.Newf(codes.Unavailable, "upstream %s: %v", p.name, err))
			return
		}
		p.nc = nc
		p.touch()
		l.watch(p)
		l.wg.Add(1)
		go l.readUpstream(p)
	})
}

func (l *link) readUpstream(p *peer) {
	defer l.wg.Done()
	err := l.readFrames(p, func(f http2.Frame) error { return l.onUp(p, f) }, func(se http2.StreamError) { l.badUp(p, se) })
	msg := "closed the connection"
	var ce connError
	switch {
	case errors.As(err, &ce):
		l.s.log().Warn("upstream broke the protocol", "upstream", p.name, "calls", len(p.streams), "error", err)
		msg = "broke the protocol: " + err.Error()
		l.broke(true, ce.code)
		l.with(func() {
			l.unlist(p)
			p.fw.WriteGoAway(0, ce.code, []byte(ce.reason))
			p.closing = true
			p.touch()
		})
	case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
		msg = err.Error()
	}
	l.with(func() {
		if len(p.streams) > 0 && !p.dead {
			l.s.log().Warn("upstream connection ended with calls in flight", "upstream", p.name, "calls", len(p.streams), "error", msg)
		}
		l.failUpstream(p, status.Newf(codes.Unavailable, "upstream %s: %s", p.name, msg))
	})
	p.nc.Close()
}

// failUpstream ends p's streams with st; new streams dial again.
func (l *link) failUpstream(p *peer, st *status.Status) {
	p.dead = true
	p.live.stop()
	l.unlist(p)
	delete(l.peers, p)
	for _, s := range p.streams {
		l.end(s, st)
	}
}

// upHeaders takes a response's headers or trailers, checked as RFC 9113 (8.1) says.
func (l *link) upHeaders(p *peer, f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	s := p.streams[id]
	switch {
	case s == nil && p.idle(id):
		return connErrorf(http2.ErrCodeProtocol, "HEADERS on stream %d, which the relay never opened", id)
	case s == nil:
		return nil // a stream the relay reset
	case s.resp.end:
		return streamErrorf(id, http2.ErrCodeStreamClosed, "HEADERS after END_STREAM on stream %d", id)
	case f.Truncated:
		p.writeRST(id, http2.ErrCodeFrameSize)
		l.end(s, status.Newf(codes.ResourceExhausted, "upstream %s sent a response header list over the limit of %d bytes", p.name, l.lim.MaxHeaderListSize))
		return nil
	case !s.respHeaders && f.PseudoValue("status") == "":
		return streamErrorf(id, http2.ErrCodeProtocol, "response without :status on stream %d", id)
	case s.respHeaders && !f.StreamEnded():
		return streamErrorf(id, http2.ErrCodeProtocol, "trailers without END_STREAM on stream %d", id)
	case s.respHeaders && len(f.PseudoFields()) > 0:
		return streamErrorf(id, http2.ErrCodeProtocol, "pseudo-header in trailers on stream %d", id)
	}
	n, fits := l.down.fits(f.Fields)
	if !s.respHeaders && !f.StreamEnded() {
		if !fits {
			s.resetUp(http2.ErrCodeCancel)
			l.end(s, status.Newf(codes.ResourceExhausted, "response header list of %d bytes from upstream %s is larger than the caller accepts (%d)", n, p.name, l.down.maxHeaderList))
			return nil
		}
		l.down.writeHeaders(s.id, f.Fields, false)
		s.respHeaders = true
		return nil
	}
	// Trailers (or a trailers-only answer): after the data still waiting for window.
	s.resp.trailers = f.Fields
	if !fits {
		s.resp.trailers = statusFields(status.Newf(codes.ResourceExhausted, "response trailers of %d bytes from upstream %s are larger than the caller accepts (%d)", n, p.name, l.down.maxHeaderList), s.respHeaders)
	}
	s.respHeaders = true
	s.resp.end = true
	l.push(s, &s.resp, nil)
	return nil
}

func (l *link) upReset(p *peer, f *http2.RSTStreamFrame) error {
	s := p.streams[f.StreamID]
	if s == nil {
		if p.idle(f.StreamID) {
			return connErrorf(http2.ErrCodeProtocol, "RST_STREAM on stream %d, which the relay never opened", f.StreamID)
		}
		return nil
	}
	if f.ErrCode == http2.ErrCodeNo && s.resp.end && !s.resp.done {
		s.rstAfter = true // the answer is complete; the reset follows it
		return nil
	}
	l.down.writeRST(s.id, f.ErrCode)
	l.drop(s)
	return nil
}

// upGoAway retires p: new streams dial a new connection, and those p says it never took go
// back to the caller as refused, which gRPC clients retry by themselves.
func (l *link) upGoAway(p *peer, f *http2.GoAwayFrame) {
	p.goingAway = true
	l.unlist(p)
	for id, s := range p.streams {
		if id > f.LastStreamID {
			l.down.writeRST(id, http2.ErrCodeRefusedStream)
			l.drop(s)
		}
	}
	l.retire(p)
}

// unlist takes p out of the connections new streams may take.
func (l *link) unlist(p *peer) {
	ps := slices.DeleteFunc(l.ups[p.key], func(q *peer) bool { return q == p })
	if len(ps) == 0 {
		delete(l.ups, p.key)
	} else {
		l.ups[p.key] = ps
	}
}

// retire closes p, once written out, when it is going away and has no stream left.
func (l *link) retire(p *peer) {
	if p.goingAway && len(p.streams) == 0 && !p.closing {
		p.closing = true
		p.touch()
	}
}

// onData takes a DATA frame from p, within the windows the relay granted it (RFC 9113 6.9):
// what p sends past them is refused rather than held, so what a connection holds is bounded.
func (l *link) onData(p *peer, f *http2.DataFrame) error {
	id, n := f.StreamID, int(f.Length)
	if int64(n) > p.inflow {
		return connErrorf(http2.ErrCodeFlowControl, "DATA past the connection window")
	}
	p.inflow -= int64(n)
	s := p.streams[id]
	if s == nil {
		if p.idle(id) {
			return connErrorf(http2.ErrCodeProtocol, "DATA on idle stream %d", id)
		}
		p.credit(n)
		if p != l.down {
			return nil // a stream the relay reset
		}
		return streamErrorf(id, http2.ErrCodeStreamClosed, "DATA on closed stream %d", id)
	}
	h := s.from(p)
	switch {
	case h.end:
		p.credit(n)
		return streamErrorf(id, http2.ErrCodeStreamClosed, "DATA after END_STREAM on stream %d", id)
	case p != l.down && !s.respHeaders:
		p.credit(n)
		return streamErrorf(id, http2.ErrCodeProtocol, "DATA before the response headers on stream %d", id)
	case len(h.buf)+int(h.credit)+n > streamWindow:
		p.credit(n)
		return streamErrorf(id, http2.ErrCodeFlowControl, "DATA past the window of stream %d", id)
	case n == 0 && !f.StreamEnded():
		return l.spend(p, "empty DATA frames")
	}
	data := f.Data()
	if pad := n - len(data); pad > 0 { // never passed on: credited back at once
		p.credit(pad)
		h.credit += uint32(pad)
	}
	if p == l.down && s.limit.max > 0 {
		if size, over := s.limit.feed(data); over {
			p.credit(len(data))
			s.resetUp(http2.ErrCodeCancel)
			l.end(s, status.Newf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", size, s.limit.max))
			return nil
		}
	}
	h.bytes += int64(len(data))
	h.end = f.StreamEnded()
	l.push(s, h, data)
	return nil
}

// pushAll sends what p's windows now admit.
func (l *link) pushAll(p *peer) {
	for _, s := range p.streams {
		if h := s.toward(p); len(h.buf) > 0 {
			l.push(s, h, nil)
		}
	}
}

// push sends h's buffered bytes and then data as far as the receiver's windows admit, keeps
// the rest, ends h's side once everything went, and credits the sender for what went.
func (l *link) push(s *stream, h *half, data []byte) {
	if h.done {
		h.from.credit(len(data))
		return
	}
	buffered := len(h.buf) > 0
	if buffered {
		h.buf = append(h.buf, data...)
		data = h.buf
	}
	to, sent := h.to, 0
	for len(data) > 0 && !to.dead {
		n := min(len(data), to.maxFrame, int(min(h.win, to.sendWin)))
		if n <= 0 {
			break
		}
		last := n == len(data) && h.end && h.trailers == nil
		to.fw.WriteData(s.id, last, data[:n])
		h.win -= int64(n)
		to.sendWin -= int64(n)
		data, sent = data[n:], sent+n
		h.done = last
	}
	switch {
	case len(data) == 0:
		h.buf = h.buf[:0]
	case buffered:
		h.buf = data
	default:
		h.buf = append(h.buf, data...) // the frame's bytes are only valid until the next read
	}
	if len(data) == 0 && h.end && !h.done {
		if h.trailers != nil {
			to.writeHeaders(s.id, h.trailers, true)
		} else {
			to.fw.WriteData(s.id, true, nil)
		}
		h.done = true
	}
	if sent > 0 || h.done {
		to.touch()
	}
	h.passed(s.id, sent)
	switch {
	case s.rstAfter && s.resp.done:
		l.down.writeRST(s.id, http2.ErrCodeNo)
		l.drop(s)
	case s.req.done && s.resp.done:
		l.drop(s)
	}
}

// passed credits h's sender for n bytes passed on: its connection window at once, the
// stream's in batches of a quarter window, while the sender still sends.
func (h *half) passed(id uint32, n int) {
	if n == 0 || h.from == nil {
		return
	}
	h.from.credit(n)
	h.credit += uint32(n)
	if !h.end && h.credit >= streamWindow/4 {
		h.from.fw.WriteWindowUpdate(id, h.credit)
		h.credit = 0
		h.from.touch()
	}
}

// end answers the caller of s with st, unless it has had its answer, and drops s.
func (l *link) end(s *stream, st *status.Status) {
	if !s.resp.done {
		l.down.writeStatus(s.id, st, s.respHeaders)
		s.resp.done = true
		s.obs.answered(st)
	}
	if !s.req.end {
		l.down.writeRST(s.id, http2.ErrCodeNo) // the caller may still be sending: stop it
	}
	l.drop(s)
}

// drop forgets s.
func (l *link) drop(s *stream) {
	if l.down.streams[s.id] != s {
		return
	}
	delete(l.down.streams, s.id)
	// What was received and never passed on still counts against the senders' windows.
	l.down.credit(len(s.req.buf))
	if s.up != nil {
		delete(s.up.streams, s.id)
		s.up.credit(len(s.resp.buf))
		l.retire(s.up)
	}
	s.req.buf, s.resp.buf = nil, nil
	l.ended(s)
	if l.draining && len(l.down.streams) == 0 {
		l.down.closing = true
		l.down.touch()
	}
}

// withHeader returns fields with add in place of the caller's fields of the same names, so
// that a caller cannot forge what the Director adds.
func withHeader(fields, add []hpack.HeaderField) []hpack.HeaderField {
	if len(add) == 0 {
		return fields
	}
	out := make([]hpack.HeaderField, 0, len(fields)+len(add))
	for _, f := range fields {
		if !slices.ContainsFunc(add, func(a hpack.HeaderField) bool { return a.Name == f.Name }) {
			out = append(out, f)
		}
	}
	return append(out, add...)
}
