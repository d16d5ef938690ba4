//go:build !linux

package rawsock

import "net"

func wrap(tc *net.TCPConn) net.Conn { return tc }
