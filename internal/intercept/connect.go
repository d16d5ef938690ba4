package intercept

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// maxConnectBytes bounds a CONNECT request, its headers included. The ones gRPC libraries send
// are under 100 bytes; 8 KiB is what many proxies and servers allow for a request head.
const maxConnectBytes = 8 << 10

// established is the answer to an admitted CONNECT; after it the connection is the tunnel.
const established = "HTTP/1.1 200 Connection established\r\n\r\n"

// connect serves a connection whose first bytes, p, began a CONNECT request: it reads and
// checks the request, answers it, and serves the tunnel as a fresh connection.
func (l *Listener) connect(c net.Conn, p []byte) {
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	target, host, port, rest, code, reason := readConnect(c, p)
	if code == 0 {
		switch {
		case l.isSelf(host, port):
			code, reason = http.StatusForbidden, fmt.Sprintf("CONNECT %s: that is one of the sidecar's own listeners", target)
		case l.o.Allow != nil && !l.o.Allow(host, port):
			code, reason = http.StatusForbidden, fmt.Sprintf("CONNECT %s: not an allowed destination", target)
		}
	}
	if code != 0 {
		l.log.Info("refused a CONNECT", "remote", c.RemoteAddr().String(), "status", code, "reason", reason)
		refuse(c, code, reason)
		return
	}
	if _, err := io.WriteString(c, established); err != nil {
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	p, kind, err := sniff(c, rest, l.o.DetectTimeout)
	if err != nil {
		c.Close()
		return
	}
	tc := &Conn{Conn: c, prefix: p, dest: target}
	if kind == kindH2 {
		l.handoff(tc)
		return
	}
	l.opaque(tc)
}

// readConnect reads a CONNECT request from p and then c, at most maxConnectBytes, and returns
// its target (host:port as sent, and split, the port in canonical digits), with the bytes read past its end (the tunnel's
// first), or an HTTP status code and the reason to answer with.
func readConnect(c net.Conn, p []byte) (target, host, port string, rest []byte, code int, reason string) {
	lr := &io.LimitedReader{R: c, N: int64(maxConnectBytes - len(p))}
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(p), lr), 1024)
	req, err := http.ReadRequest(br)
	switch {
	case err != nil && lr.N <= 0:
		return "", "", "", nil, http.StatusBadRequest, fmt.Sprintf("CONNECT request longer than %d bytes", maxConnectBytes)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "", "", "", nil, http.StatusRequestTimeout, fmt.Sprintf("CONNECT request incomplete after %v", handshakeTimeout)
	case err != nil:
		return "", "", "", nil, http.StatusBadRequest, fmt.Sprintf("malformed CONNECT request: %v", err)
	case req.ProtoMajor != 1:
		return "", "", "", nil, http.StatusBadRequest, fmt.Sprintf("CONNECT over %s: want HTTP/1.1 or HTTP/1.0", req.Proto)
	case req.ContentLength != 0 || len(req.TransferEncoding) > 0:
		return "", "", "", nil, http.StatusBadRequest, "a CONNECT request has no body"
	}
	target = req.RequestURI
	host, port, err = net.SplitHostPort(target)
	if n, perr := strconv.ParseUint(port, 10, 16); err != nil || host == "" || perr != nil || n == 0 {
		return "", "", "", nil, http.StatusBadRequest, fmt.Sprintf("CONNECT target %q: want host:port", target)
	} else {
		port = strconv.FormatUint(n, 10) // as policy compares it: 050051 is 50051
	}
	rest, _ = br.Peek(br.Buffered())
	return target, host, port, bytes.Clone(rest), 0, ""
}

// refuse answers a CONNECT with code and reason, and closes c. The client's unread bytes
// are drained for a moment first: closing with them unread would reset the connection, and
// the client might lose the answer.
func refuse(c net.Conn, code int, reason string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	body := reason + "\n"
	if _, err := fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(body), body); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		c.SetReadDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}
}

// isSelf reports whether a CONNECT to host:port would reach one of the sidecar's listeners.
// A name other than localhost is not resolved for this: the relay refuses a call that comes
// back to it, and an opaque tunnel to the listener is closed, as not redirected, when its
// first bytes are not HTTP/2 or CONNECT.
func (l *Listener) isSelf(host, port string) bool {
	ip, err := netip.ParseAddr(host)
	loopback := host == "localhost" || (err == nil && ip.IsLoopback())
	ip = ip.Unmap()
	for _, a := range l.self {
		ta, ok := a.(*net.TCPAddr)
		if !ok || strconv.Itoa(ta.Port) != port {
			continue
		}
		la := ta.AddrPort().Addr().Unmap()
		switch {
		case loopback && (la.IsLoopback() || la.IsUnspecified()):
			return true
		case ip.IsValid() && ip == la:
			return true
		case ip.IsValid() && la.IsUnspecified() && isLocal(ip):
			return true
		}
	}
	return false
}

// isLocal reports whether ip is an address of one of this host's interfaces.
func isLocal(ip netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if na, ok := netip.AddrFromSlice(n.IP); ok && na.Unmap() == ip {
				return true
			}
		}
	}
	return false
}
