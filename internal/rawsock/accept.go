package rawsock

import (
	"errors"
	"net"
	"syscall"
)

// AcceptRetryable reports whether an Accept error leaves the listener usable, so that a
// server backs off and accepts again instead of ending: the system short of descriptors,
// buffers or memory, or a connection that failed before it was taken (on Linux accept(2) also
// passes on a pending network error of the new connection, which its man page says to treat
// as EAGAIN).
func AcceptRetryable(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPERM,
		syscall.EPROTO, syscall.ENOPROTOOPT, syscall.EOPNOTSUPP,
		syscall.ENETDOWN, syscall.ENETUNREACH, syscall.EHOSTDOWN, syscall.EHOSTUNREACH:
		return true
	}
	return false
}
