package proxy

import (
	"net"
	"sync"
)

// dialed holds the two ends (local, remote) of every upstream connection the relays of this
// process have open. A downstream connection with the same two ends, reversed, is one of
// them: a call routed back to a relay it passed through, which would go round without end.
// Detecting it from the connection, rather than with a header, leaves the calls that reach
// upstreams as their callers sent them. It holds live connections only: Close takes them out.
var dialed = struct {
	sync.Mutex
	conns map[[2]string]*dialedConn
}{conns: map[[2]string]*dialedConn{}}

type dialedConn struct {
	net.Conn
	ends [2]string
}

// remember enters c, an upstream connection just dialed, in dialed.
func remember(c net.Conn, err error) (net.Conn, error) {
	if err != nil || !tcpEnds(c) {
		return c, err
	}
	dc := &dialedConn{Conn: c, ends: [2]string{c.LocalAddr().String(), c.RemoteAddr().String()}}
	dialed.Lock()
	dialed.conns[dc.ends] = dc
	dialed.Unlock()
	return dc, nil
}

func (c *dialedConn) Close() error {
	dialed.Lock()
	if dialed.conns[c.ends] == c { // the ends may be another connection's by now
		delete(dialed.conns, c.ends)
	}
	dialed.Unlock()
	return c.Conn.Close()
}

// isLoop reports whether c, an accepted connection, is an upstream connection of a relay of
// this process: its remote end that one's local end, and its local end (or, for a redirected
// connection, its original destination dest) that one's remote end. Both ends count: the
// kernel may give the same local port to connections to different destinations.
func isLoop(c net.Conn, dest string) bool {
	if !tcpEnds(c) {
		return false
	}
	remote := c.RemoteAddr().String()
	dialed.Lock()
	defer dialed.Unlock()
	_, loop := dialed.conns[[2]string{remote, c.LocalAddr().String()}]
	if !loop && dest != "" {
		_, loop = dialed.conns[[2]string{remote, dest}]
	}
	return loop
}

// looped reports whether the downstream is a loop (isLoop). It asks at the first stream: by
// then the relay that dialed the connection has entered it, as it does before writing to it.
func (l *link) looped() bool {
	if !l.from.checked {
		l.from.checked = true
		l.from.loop = isLoop(l.down.nc, l.from.dest)
	}
	return l.from.loop
}

// tcpEnds reports whether c's ends are TCP addresses, which tell connections apart; the ends
// of a socket pair (Pipe) are the same for every one.
func tcpEnds(c net.Conn) bool {
	_, local := c.LocalAddr().(*net.TCPAddr)
	_, remote := c.RemoteAddr().(*net.TCPAddr)
	return local && remote
}
