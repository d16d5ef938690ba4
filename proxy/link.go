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
	ctx    context.Context // ends when the link closes; bounds dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // upstream goroutines

	mu       sync.Mutex
	t        *touched // the flush list of the goroutine holding mu
	down     *peer
	ups      map[string][]*peer // the connections new streams to a destination may take
	limits   map[string]uint32  // a destination's last SETTINGS_MAX_CONCURRENT_STREAMS
	peers    map[*peer]struct{} // every upstream, draining ones too
	lastID   uint32
	draining bool
	from     origin // what is known of the connection: accept.go
}

func newLink(s *Server, c net.Conn) *link {
	l := &link{s: s, ups: map[string][]*peer{}, limits: map[string]uint32{}, peers: map[*peer]struct{}{}}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.down = newPeer(l, "downstream", c)
	return l
}

// stream is one call: the downstream's stream and its twin, with the same id, on up.
type stream struct {
	id          uint32
	up          *peer
	req         half // downstream -> up
	resp        half // up -> downstream
	respHeaders bool // the response headers went downstream
	rstAfter    bool // up reset the stream (NO_ERROR) while its trailers still waited for window
	limit       msgLimit
	obs         *observed // nil unless Server.Observe watches it
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
	c.SetReadDeadline(time.Now().Add(limit(l.s.Limits.PrefaceTimeout, defaultPrefaceTimeout))) // until its SETTINGS: settle
	if err := readPreface(c); err != nil {
		l.s.log().Debug("connection is not HTTP/2", "remote", c.RemoteAddr().String(), "error", err)
		return
	}
	l.accepted()
	l.with(func() { l.down.writeWindows() })
	err := l.readFrames(l.down, l.onDown, l.badDown)
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		l.s.log().Debug("outbound connection broke the protocol", "remote", c.RemoteAddr().String(), "error", err)
		l.with(func() {
			l.down.fw.WriteGoAway(l.lastID, http2.ErrCode(ce), nil)
			l.down.closing = true
			l.down.touch()
		})
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
		l.down.fw.WriteGoAway(l.lastID, http2.ErrCodeNo, nil)
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

func (l *link) onDown(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		l.downHeaders(f)
	case *http2.DataFrame:
		l.onData(l.down, f)
	case *http2.RSTStreamFrame:
		if s := l.down.streams[f.StreamID]; s != nil {
			s.resetUp(f.ErrCode)
			l.drop(s)
		}
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	default:
		l.control(l.down, f)
	}
	return nil
}

func (l *link) badDown(se http2.StreamError) {
	if s := l.down.streams[se.StreamID]; s != nil {
		s.resetUp(http2.ErrCodeCancel)
		l.drop(s)
	}
	l.down.writeRST(se.StreamID, se.Code)
}

func (l *link) onUp(p *peer, f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		l.upHeaders(p, f)
	case *http2.DataFrame:
		l.onData(p, f)
	case *http2.RSTStreamFrame:
		l.upReset(p, f)
	case *http2.GoAwayFrame:
		l.upGoAway(p, f)
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // the relay disabled push
	default:
		l.control(p, f)
	}
	return nil
}

func (l *link) badUp(p *peer, se http2.StreamError) {
	p.writeRST(se.StreamID, se.Code)
	if s := p.streams[se.StreamID]; s != nil {
		l.end(s, status.Newf(codes.Internal, "upstream %s sent a bad frame: %v", p.name, se))
	}
}

// control handles the frames about a connection rather than a call.
func (l *link) control(p *peer, f http2.Frame) {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			p.settings(f)
			l.pushAll(p)
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			p.ack(f.Data) // held for company: see peer.acks
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			p.sendWin += int64(f.Increment)
			l.pushAll(p)
		} else if s := p.streams[f.StreamID]; s != nil {
			h := s.toward(p)
			h.win += int64(f.Increment)
			l.push(s, h, nil)
		}
	}
}

// downHeaders starts a stream, or ends a request that closes with a header block.
func (l *link) downHeaders(f *http2.MetaHeadersFrame) {
	id := f.StreamID
	if s := l.down.streams[id]; s != nil {
		// gRPC callers send no trailers; a header block that ends the request just ends it.
		if f.StreamEnded() && !s.req.end {
			s.req.end = true
			l.push(s, &s.req, nil)
		}
		return
	}
	if id <= l.lastID || id%2 == 0 {
		return // a stream that has ended
	}
	l.lastID = id
	if l.draining {
		l.down.writeRST(id, http2.ErrCodeRefusedStream)
		return
	}
	d, obs := l.decide(f)
	if d.Status != nil {
		l.down.writeStatus(id, d.Status, false)
		if !f.StreamEnded() {
			l.down.writeRST(id, http2.ErrCodeNo)
		}
		return
	}
	p := l.upstream(d)
	s := &stream{id: id, up: p, limit: msgLimit{max: d.MaxRequestMessage}, obs: obs}
	s.req = half{from: l.down, to: p, win: p.initWin, end: f.StreamEnded(), done: f.StreamEnded()}
	s.resp = half{from: p, to: l.down, win: l.down.initWin}
	l.down.streams[id] = s
	p.streams[id] = s
	p.writeHeaders(id, withHeader(f.Fields, d.Header), s.req.end)
}

// upstream returns the connection a stream for d takes, dialing one when none has room: an
// upstream's SETTINGS_MAX_CONCURRENT_STREAMS bounds each connection, not the calls.
func (l *link) upstream(d Decision) *peer {
	key, name := d.Upstream, d.Upstream
	if d.Local {
		key, name = localKey, "the local server"
	}
	for _, p := range l.ups[key] {
		if uint32(len(p.streams)) < p.maxStreams {
			return p
		}
	}
	p := newPeer(l, name, nil)
	p.key = key
	if n, ok := l.limits[key]; ok {
		p.maxStreams = n // until its own SETTINGS come, as its siblings said
	}
	p.out.Write([]byte(http2.ClientPreface))
	p.writeWindows(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	l.ups[key] = append(l.ups[key], p)
	l.peers[p] = struct{}{}
	l.wg.Add(1)
	go l.dialUpstream(p, d)
	return p
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
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
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

func (l *link) upHeaders(p *peer, f *http2.MetaHeadersFrame) {
	s := p.streams[f.StreamID]
	if s == nil || s.resp.end {
		return
	}
	if !s.respHeaders && !f.StreamEnded() {
		l.down.writeHeaders(s.id, f.Fields, false)
		s.respHeaders = true
		return
	}
	// Trailers (or a trailers-only answer): after the data still waiting for window.
	s.respHeaders = true
	s.resp.trailers = f.Fields
	s.resp.end = true
	l.push(s, &s.resp, nil)
}

func (l *link) upReset(p *peer, f *http2.RSTStreamFrame) {
	s := p.streams[f.StreamID]
	if s == nil {
		return
	}
	if f.ErrCode == http2.ErrCodeNo && s.resp.end && !s.resp.done {
		s.rstAfter = true // the answer is complete; the reset follows it
		return
	}
	l.down.writeRST(s.id, f.ErrCode)
	l.drop(s)
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

// onData takes a DATA frame from p.
func (l *link) onData(p *peer, f *http2.DataFrame) {
	data := f.Data()
	p.credit(int(f.Length) - len(data)) // padding is never passed on
	s := p.streams[f.StreamID]
	if s == nil || s.from(p).end {
		p.credit(len(data))
		return
	}
	if p == l.down && s.limit.max > 0 {
		if size, over := s.limit.feed(data); over {
			p.credit(len(data))
			s.resetUp(http2.ErrCodeCancel)
			l.end(s, status.Newf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", size, s.limit.max))
			return
		}
	}
	h := s.from(p)
	h.bytes += int64(len(data))
	h.end = f.StreamEnded()
	l.push(s, h, data)
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
