package intercept

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// What a connection's first bytes say it is.
type kind int

const (
	kindOpaque kind = iota
	kindH2
	kindConnect
)

var (
	preface       = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") // RFC 9113 3.4
	connectMethod = []byte("CONNECT ")
)

// sniffBytes bounds a sniff's first read: more than either signature needs, and little to
// hold for each connection being sniffed.
const sniffBytes = 512

// classify tells from p, the first bytes of a connection, what it is; ok is false while p is
// too short to say.
func classify(p []byte) (k kind, ok bool) {
	switch {
	case bytes.HasPrefix(p, preface):
		return kindH2, true
	case bytes.HasPrefix(p, connectMethod):
		return kindConnect, true
	case bytes.HasPrefix(preface, p), bytes.HasPrefix(connectMethod, p):
		return kindOpaque, false
	}
	return kindOpaque, true
}

// sniff reads c's first bytes, after pre (bytes of c already read), until they say what c is,
// waiting at most timeout for them. What it read is returned, to be replayed. A connection
// that sends nothing, or stops short, within the timeout, or ends, is opaque. Any other read
// error is returned.
func sniff(c net.Conn, pre []byte, timeout time.Duration) ([]byte, kind, error) {
	if k, ok := classify(pre); ok {
		return pre, k, nil
	}
	buf := make([]byte, sniffBytes)
	n := copy(buf, pre)
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	for {
		m, err := c.Read(buf[n:])
		n += m
		k, ok := classify(buf[:n])
		switch {
		case ok:
			return buf[:n], k, nil
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, io.EOF):
			return buf[:n], kindOpaque, nil
		case err != nil:
			return nil, kindOpaque, err
		}
	}
}
