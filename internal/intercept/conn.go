package intercept

import "net"

// Conn is a sniffed connection: its first Reads return the bytes the sniff read, and it knows
// where its client was going.
type Conn struct {
	net.Conn
	prefix []byte // sniffed, not yet read again
	dest   string
}

// Read returns the sniffed bytes first, then reads the connection.
func (c *Conn) Read(b []byte) (int, error) {
	if len(c.prefix) == 0 {
		return c.Conn.Read(b)
	}
	n := copy(b, c.prefix)
	c.prefix = c.prefix[n:]
	if len(c.prefix) == 0 {
		c.prefix = nil // the sniff's buffer is not held any longer than needed
	}
	return n, nil
}

// Destination is where the client was going: the CONNECT target as it was sent (host:port, a
// name left unresolved), or the original address of a connection iptables redirected here;
// empty when the client dialed the listener itself (explicit mode).
func (c *Conn) Destination() string { return c.dest }

// CloseWrite shuts down the writing side, when the connection has one to shut.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// Destination returns c's Destination when it is a connection from a Listener, else empty:
// it is what proxy.Server.Destination wants.
func Destination(c net.Conn) string {
	if ic, ok := c.(*Conn); ok {
		return ic.dest
	}
	return ""
}
