package config

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"strconv"
	"strings"
)

// AllowsDestination reports whether a CONNECT to host:port (port in decimal digits) is
// allowed: AllowDestinations is empty, or one of its entries matches.
func (o *Outbound) AllowsDestination(host, port string) bool {
	if len(o.AllowDestinations) == 0 {
		return true
	}
	for _, s := range o.AllowDestinations {
		if d, err := parseDestination(s); err == nil && d.match(host, port) {
			return true
		}
	}
	return false
}

// destination is an entry of AllowDestinations: addresses in prefix, or names matching glob,
// on port ("*": any).
type destination struct {
	prefix netip.Prefix
	glob   string // lower case
	port   string
}

func parseDestination(s string) (destination, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return destination{prefix: p.Masked(), port: "*"}, nil
	}
	host, port, err := splitDestination(s)
	if err != nil {
		return destination{}, err
	}
	if p, err := netip.ParsePrefix(host); err == nil {
		return destination{prefix: p.Masked(), port: port}, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		return destination{prefix: netip.PrefixFrom(a, a.BitLen()), port: port}, nil
	}
	if _, err := path.Match(host, ""); err != nil {
		return destination{}, fmt.Errorf("bad glob %q: %v", host, err)
	}
	return destination{glob: strings.ToLower(host), port: port}, nil
}

// splitDestination splits host:port, where port is a number or "*", and returns the port in
// canonical digits.
func splitDestination(s string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(s)
	if err != nil || host == "" {
		return "", "", fmt.Errorf("want host:port, [ipv6]:port or a CIDR, got %q", s)
	}
	if port == "*" {
		return host, port, nil
	}
	if n, err := strconv.ParseUint(port, 10, 16); err == nil && n > 0 {
		return host, strconv.FormatUint(n, 10), nil
	}
	return "", "", fmt.Errorf("bad port %q in %q: want 1-65535 or *", port, s)
}

func (d destination) match(host, port string) bool {
	if d.port != "*" && d.port != port {
		return false
	}
	if d.prefix.IsValid() {
		a, err := netip.ParseAddr(host)
		return err == nil && d.prefix.Contains(a.Unmap())
	}
	ok, _ := path.Match(d.glob, strings.ToLower(host))
	return ok
}
