package proxy

import "encoding/binary"

// msgLimit follows the gRPC length prefixes of a stream's bytes to find a message over max.
type msgLimit struct {
	max  int
	hdr  [5]byte // a prefix: compressed flag, big-endian length
	have int     // bytes of hdr read so far
	left int     // bytes of the current message still to come
}

// feed reads p; it returns the size of a message over max when it meets its prefix.
func (m *msgLimit) feed(p []byte) (size int, over bool) {
	for len(p) > 0 {
		if m.left > 0 {
			n := min(m.left, len(p))
			m.left -= n
			p = p[n:]
			continue
		}
		n := copy(m.hdr[m.have:], p)
		m.have += n
		p = p[n:]
		if m.have < len(m.hdr) {
			break
		}
		m.have = 0
		m.left = int(binary.BigEndian.Uint32(m.hdr[1:]))
		if m.left > m.max {
			return m.left, true
		}
	}
	return 0, false
}

// DefaultLimits are the Limits a Server takes for its zero fields.
var DefaultLimits = Limits{
	MaxConcurrentStreams: 1000,
	MaxHeaderListSize:    60 << 10, // as Envoy's
	MaxResetsPerSecond:   200,
	PrefaceTimeout:       defaultPrefaceTimeout,
	IdleTimeout:          defaultIdleTimeout,
	UpstreamIdleTimeout:  defaultUpstreamIdleTimeout,
	KeepaliveInterval:    defaultKeepaliveInterval,
	KeepaliveTimeout:     defaultKeepaliveTimeout,
}

// withDefaults returns l with its zero fields taken from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	return Limits{
		MaxConcurrentStreams: limit(l.MaxConcurrentStreams, d.MaxConcurrentStreams),
		MaxHeaderListSize:    limit(l.MaxHeaderListSize, d.MaxHeaderListSize),
		MaxResetsPerSecond:   limit(l.MaxResetsPerSecond, d.MaxResetsPerSecond),
		PrefaceTimeout:       limit(l.PrefaceTimeout, d.PrefaceTimeout),
		IdleTimeout:          limit(l.IdleTimeout, d.IdleTimeout),
		UpstreamIdleTimeout:  limit(l.UpstreamIdleTimeout, d.UpstreamIdleTimeout),
		KeepaliveInterval:    limit(l.KeepaliveInterval, d.KeepaliveInterval),
		KeepaliveTimeout:     limit(l.KeepaliveTimeout, d.KeepaliveTimeout),
	}
}
