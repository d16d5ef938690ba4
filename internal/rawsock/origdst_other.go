//go:build !linux

package rawsock

import (
	"errors"
	"net/netip"
)

func originalDst(uintptr, bool) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("SO_ORIGINAL_DST is Linux's")
}
