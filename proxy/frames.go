package proxy

import (
	"fmt"
	"math"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// maxFrameSize is the SETTINGS_MAX_FRAME_SIZE the relay advertises and reads: the
	// protocol's least, which gRPC peers never exceed.
	maxFrameSize = 16384
	// maxWindow is the largest flow-control window RFC 9113 (6.9.1) allows.
	maxWindow = 1<<31 - 1
	// maxSettings bounds the parameters of one SETTINGS frame, as x/net does: a peer gains
	// nothing from more than the few that exist.
	maxSettings = 100
	// maxUpstreamConns bounds a link's connections to one destination, whatever stream
	// limit the destination advertises (a limit of 0 or 1 would otherwise dial per stream).
	maxUpstreamConns = 32
	// resetBurst is how many seconds' worth of resets a connection may spend at once.
	resetBurst = 10
)

// connError is a connection error (RFC 9113 5.4.1) found in what a peer sent: the relay
// answers it with GOAWAY and closes the connection.
type connError struct {
	code   http2.ErrCode
	reason string
}

func (e connError) Error() string { return fmt.Sprintf("%v: %s", e.code, e.reason) }

func connErrorf(code http2.ErrCode, format string, a ...any) error {
	return connError{code, fmt.Sprintf(format, a...)}
}

// streamErrorf is a stream error (RFC 9113 5.4.2): the relay resets the stream, and the
// connection serves on.
func streamErrorf(id uint32, code http2.ErrCode, format string, a ...any) error {
	return http2.StreamError{StreamID: id, Code: code, Cause: fmt.Errorf(format, a...)}
}

// readError turns what the framer returned into a connError where the peer broke the
// protocol, so that every caller answers it alike.
func readError(fr *http2.Framer, err error) error {
	switch err := err.(type) {
	case http2.ConnectionError:
		reason := "malformed frame"
		if d := fr.ErrorDetail(); d != nil {
			reason = d.Error()
		}
		return connError{http2.ErrCode(err), reason}
	}
	if err == http2.ErrFrameTooLarge {
		return connErrorf(http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE %d", maxFrameSize)
	}
	return err
}

// idle reports whether stream id is one p never opened (RFC 9113 5.1): past the last one
// opened, or of the parity of the other side's streams.
func (p *peer) idle(id uint32) bool {
	return id%2 == 0 || id > p.lastID
}

// headerListSize is the size of fields as SETTINGS_MAX_HEADER_LIST_SIZE counts it.
func headerListSize(fields []hpack.HeaderField) uint32 {
	var n uint64
	for _, f := range fields {
		n += uint64(f.Size())
	}
	return uint32(min(n, math.MaxUint32))
}

// fits reports whether p accepts fields as a header block, and their size.
func (p *peer) fits(fields []hpack.HeaderField) (uint32, bool) {
	n := headerListSize(fields)
	return n, n <= p.maxHeaderList
}

// bucket is a token bucket: rate tokens a second, up to burst.
type bucket struct {
	tokens float64
	at     time.Time
}

// take spends a token, and reports false when none is left.
func (b *bucket) take(rate, burst float64) bool {
	now := time.Now()
	if b.at.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.at).Seconds()*rate)
	}
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// spend counts one of p's frames that cost the relay work and carry nothing (a reset, a
// refused stream, an empty DATA frame): past Limits.MaxResetsPerSecond on average, the
// connection is closed (CVE-2023-44487 and the floods of CVE-2019-9512..9518).
func (l *link) spend(p *peer, what string) error {
	rate := float64(l.lim.MaxResetsPerSecond)
	if !p.calm.take(rate, rate*resetBurst) {
		return connErrorf(http2.ErrCodeEnhanceYourCalm, "more than %d %s a second", l.lim.MaxResetsPerSecond, what)
	}
	return nil
}

// checkRequest reports a malformed request header block (RFC 9113 8.2.2, 8.3.1), which is
// answered with a stream error rather than relayed.
func checkRequest(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if f.HasPriority() && f.Priority.StreamDep == id {
		return streamErrorf(id, http2.ErrCodeProtocol, "stream %d depends on itself", id)
	}
	method, path := f.PseudoValue("method"), f.PseudoValue("path")
	switch {
	case method == "":
		return streamErrorf(id, http2.ErrCodeProtocol, "request without :method on stream %d", id)
	case method != "CONNECT" && (path == "" || f.PseudoValue("scheme") == ""):
		return streamErrorf(id, http2.ErrCodeProtocol, "request without :scheme or :path on stream %d", id)
	}
	for _, h := range f.RegularFields() {
		switch h.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return streamErrorf(id, http2.ErrCodeProtocol, "connection-specific header %s on stream %d", h.Name, id)
		case "te":
			if h.Value != "trailers" {
				return streamErrorf(id, http2.ErrCodeProtocol, "te other than trailers on stream %d", id)
			}
		}
	}
	return nil
}
