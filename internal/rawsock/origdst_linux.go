package rawsock

import (
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h), which
// x/sys/unix does not name.
const ip6tSOOriginalDst = 80

// originalDst reads SO_ORIGINAL_DST at SOL_IP into a sockaddr_in, or IP6T_SO_ORIGINAL_DST at
// SOL_IPV6 into a sockaddr_in6.
func originalDst(fd uintptr, is4 bool) (netip.AddrPort, error) {
	if is4 {
		var sa unix.RawSockaddrInet4
		if err := getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), unsafe.Sizeof(sa)); err != nil {
			return netip.AddrPort{}, err
		}
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port)), nil
	}
	var sa unix.RawSockaddrInet6
	if err := getsockopt(fd, unix.SOL_IPV6, ip6tSOOriginalDst, unsafe.Pointer(&sa), unsafe.Sizeof(sa)); err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), ntohs(sa.Port)), nil
}

func getsockopt(fd uintptr, level, opt int, v unsafe.Pointer, size uintptr) error {
	n := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), uintptr(opt), uintptr(v), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return os.NewSyscallError("getsockopt", e)
	}
	return nil
}

// ntohs reads a port as the kernel stores it in a sockaddr: in network byte order.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
