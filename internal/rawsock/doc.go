// Package rawsock gives the sidecar TCP connections whose reads and writes are plain
// non-blocking system calls, made without the Go runtime's system-call bookkeeping.
//
// Why: a sidecar idles between short bursts of work. Whenever all of a Go process's Ps are idle,
// the runtime's monitor thread (sysmon) sleeps until a timer is due, and the next system call
// made through the syscall package wakes it, after which it polls every 20µs until the process
// is idle again. A proxied call makes a few such bursts, so a sidecar on one core spent about a
// fifth of its CPU waking and running that thread. Sockets here are non-blocking: a read or write
// either moves bytes or fails with EAGAIN at once, after which the goroutine waits in the
// runtime's network poller exactly as net.Conn's own methods do. Nothing blocks in the kernel,
// so there is nothing for the monitor to take back.
//
// Deadlines, Close and the poller work as for any net.Conn, since the waiting goes through
// syscall.RawConn, and errors are wrapped as net.TCPConn wraps them. Under the race detector a
// read and a write report to it what syscall's do. Where the raw calls are not available
// (other systems than Linux), reads and writes are net.TCPConn's.
//
// Everything here depends on the sockets staying non-blocking, so a wrapped connection has no
// File method (Fd on the file would make the socket blocking for every holder of it), only
// net.Conn's methods, CloseWrite, SetLinger and SyscallConn. OriginalDst reads where a
// redirected connection was going (iptables mode) through SyscallConn's Control, for the same
// reason.
package rawsock
