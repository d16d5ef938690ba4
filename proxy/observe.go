package proxy

import (
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// StreamEnd is what Server.Observe learns of a stream as it ends.
type StreamEnd struct {
	// Code, when HasCode, is the gRPC status the caller got: in the upstream's trailers, or
	// the relay's own answer.
	Code    codes.Code
	HasCode bool
	// ResetCode, when Reset, is the code of the RST_STREAM that ended the stream without an
	// answer: the caller's, the upstream's passed on, or the relay's own (CANCEL when the
	// caller's connection closed under it).
	ResetCode http2.ErrCode
	Reset     bool
	// RequestBytes and ResponseBytes count the DATA (gRPC messages with their length
	// prefixes) the relay took from the caller and from the upstream to pass on.
	RequestBytes, ResponseBytes int64
	// Duration runs from the request's headers to the end.
	Duration time.Duration
}

// observed is an observed stream's record, for its StreamEnd.
type observed struct {
	end     func(StreamEnd)
	start   time.Duration // clock at the request's headers: one clock read, where time.Now takes two
	code    codes.Code
	hasCode bool
	rst     http2.ErrCode
	reset   bool
}

// decide asks the Director about the stream f starts, unless the connection is a loop, and
// tells the observer. It returns the stream's observation, and whether there is one: none
// without an observer, or when the Decision refuses the stream, which then ends here.
func (l *link) decide(f *http2.MetaHeadersFrame) (Decision, observed, bool) {
	r := &Request{Method: f.PseudoValue("path"), Authority: f.PseudoValue("authority"), Header: f.Fields, Destination: l.from.dest}
	var d Decision
	if l.looped() {
		d = Decision{Status: status.Newf(codes.FailedPrecondition, "%s came back to the relay it passed through: its upstream is the relay itself", r.Method)}
	} else {
		d = l.s.Director(r)
	}
	if d.Status != nil {
		l.down.live.idleSince = clock() // a refused stream is one all the same
	}
	if l.s.Observe == nil {
		return d, observed{}, false
	}
	end := l.s.Observe(r, d)
	switch {
	case end == nil:
		return d, observed{}, false
	case d.Status != nil:
		l.tell(end, StreamEnd{Code: d.Status.Code(), HasCode: true})
		return d, observed{}, false
	}
	return d, observed{end: end, start: clock()}, true
}

// answered notes the relay's own answer to an observed stream; o may be nil.
func (o *observed) answered(st *status.Status) {
	if o != nil {
		o.code, o.hasCode = st.Code(), true
	}
}

// resetting notes, for the observer, an RST_STREAM the relay writes for stream id: one that
// ends it before its answer is complete is how it ended.
func (l *link) resetting(id uint32, code http2.ErrCode) {
	if l.s.Observe == nil {
		return
	}
	if s := l.down.streams[id]; s != nil && s.obs != nil && !s.resp.done {
		s.obs.rst, s.obs.reset = code, true
	}
}

// tell hands an observer its stream's end: after the flush of the locked section it ends in,
// or at once outside one.
func (l *link) tell(end func(StreamEnd), e StreamEnd) {
	if l.t != nil {
		l.t.ends = append(l.t.ends, endNote{end, e})
		return
	}
	end(e)
}

// finish tells the observer of s, on l, that it ended.
func (o *observed) finish(l *link, s *stream) {
	e := StreamEnd{RequestBytes: s.req.bytes, ResponseBytes: s.resp.bytes, Duration: clock() - o.start}
	if o.hasCode {
		e.Code, e.HasCode = o.code, true
	} else if s.resp.done {
		for _, f := range s.resp.trailers {
			if f.Name == "grpc-status" {
				n, err := strconv.ParseUint(f.Value, 10, 32)
				e.Code, e.HasCode = codes.Code(n), err == nil
			}
		}
	}
	if !e.HasCode {
		e.Reset, e.ResetCode = o.reset, o.rst
	}
	l.tell(o.end, e)
}

// ended notes that s was dropped: its observation ends, and a connection's idle time starts
// as its last stream ends.
func (l *link) ended(s *stream) {
	if s.obs != nil {
		s.obs.finish(l, s)
		s.obs = nil
	}
	var now time.Duration
	for _, p := range [2]*peer{l.down, s.up} {
		if p != nil && len(p.streams) == 0 {
			if now == 0 {
				now = clock()
			}
			p.live.idleSince = now
		}
	}
}

// abandon ends the observations of the streams still open as the link closes.
func (l *link) abandon() {
	for _, s := range l.down.streams {
		if o := s.obs; o != nil {
			if !o.reset {
				o.rst, o.reset = http2.ErrCodeCancel, true
			}
			o.finish(l, s)
			s.obs = nil
		}
	}
}
