package rawsock

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// OriginalDst returns the address a connection redirected to this host (iptables REDIRECT or
// DNAT) was sent to before the redirect, as netfilter's connection tracking recorded it. On a
// connection that was not redirected it is the connection's local address. c is a connection
// of this package or a *net.TCPConn: anything with a socket (syscall.Conn). The socket is read
// through syscall.RawConn.Control, which leaves it non-blocking. Only Linux has it.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("rawsock: original destination of a %T: not a socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("rawsock: original destination: %w", err)
	}
	local, _ := c.LocalAddr().(*net.TCPAddr)
	if local == nil {
		return netip.AddrPort{}, fmt.Errorf("rawsock: original destination of a connection from %v: not TCP", c.LocalAddr())
	}
	// An IPv4 connection accepted on a dual-stack socket has an IPv4-mapped local address and
	// is tracked, and asked about, as IPv4.
	is4 := local.AddrPort().Addr().Unmap().Is4()
	var dst netip.AddrPort
	var gerr error
	err = rc.Control(func(fd uintptr) { dst, gerr = originalDst(fd, is4) })
	if err == nil {
		err = gerr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("rawsock: original destination of %v: %w", local, err)
	}
	return dst, nil
}
