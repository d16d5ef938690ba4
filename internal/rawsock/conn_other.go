//go:build !linux

package rawsock

// Elsewhere the reads and writes are net.TCPConn's own.

func (c *conn) Read(b []byte) (int, error)  { return c.tc.Read(b) }
func (c *conn) Write(b []byte) (int, error) { return c.tc.Write(b) }
