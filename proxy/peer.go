package proxy

import (
	"bytes"
	"errors"
	"math"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/status"
)

const (
	// streamWindow and connWindow are what the relay lets each peer send ahead: the most it
	// buffers per stream and per connection when the other side reads slowly.
	streamWindow = 1 << 20
	connWindow   = 4 << 20
	// initialWindow and defaultMaxFrame hold until a peer's SETTINGS say otherwise (RFC 9113).
	initialWindow   = 65535
	defaultMaxFrame = 16384
)

// peer is one HTTP/2 connection of a link: the downstream (the relay is its server) or an
// upstream (the relay is its client). Every field but nc's writes is guarded by link.mu;
// frames are written into out and reach nc in flush.
type peer struct {
	l    *link
	name string // for messages: "downstream", an address, or "the local server"
	key  string // its key in link.ups
	nc   net.Conn

	out  sink
	fw   *http2.Framer // writes into out
	henc *hpack.Encoder
	hbuf bytes.Buffer

	wmu   sync.Mutex // serializes writes to nc
	spare []byte     // out's other buffer; owned by the holder of wmu

	sendWin    int64  // what the peer lets us send on the connection
	initWin    int64  // its SETTINGS_INITIAL_WINDOW_SIZE: a new stream's window
	maxFrame   int    // its SETTINGS_MAX_FRAME_SIZE
	connCredit uint32 // bytes of its DATA passed on but not yet credited back
	inflow     int64  // what it may still send on the connection: its DATA past it is refused
	// maxHeaderList is its SETTINGS_MAX_HEADER_LIST_SIZE: a larger block fails its call
	// instead of being sent.
	maxHeaderList uint32
	unacked       int    // our SETTINGS it has not acknowledged
	lastID        uint32 // the highest stream id opened on it
	calm          bucket // see link.spend

	streams    map[uint32]*stream
	maxStreams uint32 // its SETTINGS_MAX_CONCURRENT_STREAMS
	// PING acks wait to go out with the next frames written to the peer, as a call's answer,
	// so that the pings grpc-go sends with its calls cost the peer no wake-up of their own;
	// past ackHold they go out alone.
	acks     [][8]byte
	ackTimer *time.Timer

	live liveness // keepalive and idle timeouts: keepalive.go

	goingAway bool // it sent GOAWAY (upstream) or was sent one (downstream)
	closing   bool // close it once what is framed is written
	dead      bool // its connection failed or closed
}

type sink struct{ b []byte }

func (s *sink) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

func newPeer(l *link, name string, nc net.Conn) *peer {
	p := &peer{
		l:        l,
		name:     name,
		nc:       nc,
		sendWin:  initialWindow,
		initWin:  initialWindow,
		maxFrame: defaultMaxFrame,
		inflow:   initialWindow,
		streams:  map[uint32]*stream{},
		// Unlimited until its SETTINGS say otherwise (RFC 9113 6.5.2).
		maxHeaderList: math.MaxUint32,
		// Until its SETTINGS come: the least RFC 9113 (6.5.2) recommends a server to take.
		maxStreams: 100,
	}
	p.fw = http2.NewFramer(&p.out, nil)
	p.henc = hpack.NewEncoder(&p.hbuf)
	return p
}

const (
	// ackHold bounds how long a PING ack waits for company: well past a call through the
	// relay, Restate included, and far below any keepalive timeout.
	ackHold = 10 * time.Millisecond
	// maxHeldAcks bounds the acks held at once, against a peer that floods PINGs.
	maxHeldAcks = 16
)

// touch notes that p has frames to flush by the goroutine holding the link; the acks it holds
// go with them.
func (p *peer) touch() {
	if len(p.acks) > 0 {
		for _, d := range p.acks {
			p.fw.WritePing(true, d)
		}
		p.acks = p.acks[:0]
		p.ackTimer.Stop()
	}
	p.l.t.add(p)
}

// ack answers a PING from p, with the next frames written to it or after ackHold.
func (p *peer) ack(d [8]byte) {
	p.acks = append(p.acks, d)
	switch {
	case len(p.acks) >= maxHeldAcks:
		p.touch()
	case len(p.acks) > 1: // the timer runs
	case p.ackTimer == nil:
		p.ackTimer = time.AfterFunc(p.l.s.ackHold(), func() {
			p.l.with(func() {
				if len(p.acks) > 0 {
					p.touch()
				}
			})
		})
	default:
		p.ackTimer.Reset(p.l.s.ackHold())
	}
}

// flush writes what was framed for p. A failed write closes the connection, and its reader
// then fails its streams.
func (p *peer) flush() {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	for {
		p.l.mu.Lock()
		nc := p.nc
		if nc == nil || p.dead || len(p.out.b) == 0 {
			if p.dead {
				p.out.b = p.out.b[:0]
			} else if nc != nil && p.closing {
				p.dead = true
				nc.Close()
			}
			p.l.mu.Unlock()
			return
		}
		buf := p.out.b
		p.out.b = p.spare[:0]
		p.l.mu.Unlock()
		nc.SetWriteDeadline(time.Now().Add(p.l.s.writeTimeout()))
		_, err := nc.Write(buf)
		p.spare = buf
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				p.l.s.log().Warn("closing a connection that stopped reading", "peer", p.name, "timeout", p.l.s.writeTimeout())
			}
			nc.Close()
			return
		}
	}
}

// settings applies the peer's SETTINGS, once each value is checked as RFC 9113 (6.5.2, 6.9.2)
// says.
func (p *peer) settings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		if p.unacked--; p.unacked < 0 {
			return connErrorf(http2.ErrCodeProtocol, "SETTINGS ack without SETTINGS")
		}
		return nil
	}
	if f.NumSettings() > maxSettings || f.HasDuplicates() {
		return connErrorf(http2.ErrCodeProtocol, "SETTINGS with %d parameters, or duplicates", f.NumSettings())
	}
	err := f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			return connErrorf(http2.ErrCode(err.(http2.ConnectionError)), "invalid %v", st)
		}
		switch st.ID {
		case http2.SettingEnablePush:
			if st.Val == 1 && p != p.l.down {
				return connErrorf(http2.ErrCodeProtocol, "SETTINGS_ENABLE_PUSH 1 from a server") // RFC 9113 6.5.2
			}
		case http2.SettingInitialWindowSize:
			delta := int64(st.Val) - p.initWin
			for _, s := range p.streams {
				if s.toward(p).win+delta > maxWindow {
					return connErrorf(http2.ErrCodeFlowControl, "%v overflows the window of stream %d", st, s.id)
				}
			}
			p.initWin = int64(st.Val)
			for _, s := range p.streams {
				s.toward(p).win += delta
			}
		case http2.SettingMaxHeaderListSize:
			p.maxHeaderList = st.Val
		case http2.SettingMaxFrameSize:
			p.maxFrame = int(st.Val)
		case http2.SettingMaxConcurrentStreams:
			p.maxStreams = st.Val
		case http2.SettingHeaderTableSize:
			p.henc.SetMaxDynamicTableSizeLimit(st.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if p.key != "" {
		p.l.limits[p.key] = limits{p.maxStreams, p.maxHeaderList}
	}
	p.fw.WriteSettingsAck()
	p.touch()
	return nil
}

// writeHeaders encodes fields for p and frames them, in CONTINUATIONs past one frame.
func (p *peer) writeHeaders(id uint32, fields []hpack.HeaderField, end bool) {
	p.hbuf.Reset()
	for _, f := range fields {
		p.henc.WriteField(f)
	}
	frag := p.hbuf.Bytes()
	for first := true; first || len(frag) > 0; first = false {
		chunk := frag[:min(len(frag), p.maxFrame)]
		frag = frag[len(chunk):]
		if first {
			p.fw.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: end, EndHeaders: len(frag) == 0})
		} else {
			p.fw.WriteContinuation(id, len(frag) == 0, chunk)
		}
	}
	p.touch()
}

// writeStatus ends stream id with st: as a trailers-only answer when no header went out yet.
func (p *peer) writeStatus(id uint32, st *status.Status, headersSent bool) {
	p.writeHeaders(id, statusFields(st, headersSent), true)
}

// statusFields is the header block that ends a stream with st.
func statusFields(st *status.Status, headersSent bool) []hpack.HeaderField {
	var f []hpack.HeaderField
	if !headersSent {
		f = append(f, hpack.HeaderField{Name: ":status", Value: "200"}, hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	}
	f = append(f, hpack.HeaderField{Name: "grpc-status", Value: strconv.Itoa(int(st.Code()))})
	if m := st.Message(); m != "" {
		f = append(f, hpack.HeaderField{Name: "grpc-message", Value: encodeGRPCMessage(m)})
	}
	return f
}

func (p *peer) writeRST(id uint32, code http2.ErrCode) {
	p.fw.WriteRSTStream(id, code)
	p.touch()
	p.l.resetting(id, code)
}

// credit gives the peer back n bytes of connection window, in batches of a quarter window.
func (p *peer) credit(n int) {
	p.connCredit += uint32(n)
	if p.connCredit >= connWindow/4 {
		p.fw.WriteWindowUpdate(0, p.connCredit)
		p.inflow += int64(p.connCredit)
		p.connCredit = 0
		p.touch()
	}
}

// writeSettings announces the relay's settings to the peer, and its windows: a stream's in
// SETTINGS, the connection's by raising it from the protocol's initial 64 KiB.
func (p *peer) writeSettings(s ...http2.Setting) {
	p.fw.WriteSettings(append(s,
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrameSize},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: p.l.lim.MaxHeaderListSize},
	)...)
	p.unacked++
	p.fw.WriteWindowUpdate(0, connWindow-initialWindow)
	p.inflow += connWindow - initialWindow
	p.touch()
}

// encodeGRPCMessage percent-encodes a grpc-message value as the gRPC HTTP/2 protocol says.
func encodeGRPCMessage(m string) string {
	const hex = "0123456789ABCDEF"
	var b []byte
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c >= ' ' && c <= '~' && c != '%' {
			if b != nil {
				b = append(b, c)
			}
			continue
		}
		if b == nil {
			b = append(make([]byte, 0, len(m)+8), m[:i]...)
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	if b == nil {
		return m
	}
	return string(b)
}

// touched lists the peers a goroutine framed writes for while it held the link.
type touched struct {
	peers []*peer
	// ends are the observations of the streams that ended under the lock, told after the
	// flush: an observer's work (a span's end, a histogram) must not hold up the answer it
	// records, nor the connection's other streams.
	ends []endNote
}

// endNote is one stream's end, for its observer.
type endNote struct {
	end func(StreamEnd)
	e   StreamEnd
}

func (t *touched) add(p *peer) {
	for _, q := range t.peers {
		if q == p {
			return
		}
	}
	t.peers = append(t.peers, p)
}

// flush writes the touched peers' frames, those of peers other than self (whose frames the
// goroutine read) first: a call's frames go on before the acks of the connection they came on.
func (t *touched) flush(self *peer) {
	for _, p := range t.peers {
		if p != self {
			p.flush()
		}
	}
	for _, p := range t.peers {
		if p == self {
			p.flush()
		}
	}
	t.peers = t.peers[:0]
	for _, n := range t.ends {
		n.end(n.e)
	}
	clear(t.ends)
	t.ends = t.ends[:0]
}
