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
