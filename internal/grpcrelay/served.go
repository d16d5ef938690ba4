package grpcrelay

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// served is a stream the relay serves itself with a Decision's Handler: it is the handler's
// grpc.ServerStream, with messages as raw bytes (*[]byte). The handler runs on its own
// goroutine; what it sends is framed under the link's lock and flushed at once, or with the
// trailers when the handler is unary.
type served struct {
	l      *link
	s      *stream
	method string
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{} // signalled when in grows or ends
	unary  bool          // hold what it sends until finish: see Decision.Unary

	// Guarded by l.mu.
	in         []byte // request bytes not yet taken by RecvMsg
	inEnd      bool
	header     metadata.MD
	headerSent bool
	trailer    metadata.MD
}

// handle starts h on s.
func (l *link) handle(s *stream, f *http2.MetaHeadersFrame, d Decision) {
	md, timeout, err := incoming(f.Fields)
	x := &served{l: l, s: s, method: f.PseudoValue("path"), wake: make(chan struct{}, 1), inEnd: f.StreamEnded(), unary: d.Unary}
	s.srv = x
	ctx := metadata.NewIncomingContext(l.ctx, md)
	if timeout > 0 {
		x.ctx, x.cancel = context.WithTimeout(ctx, timeout)
	} else {
		x.ctx, x.cancel = context.WithCancel(ctx)
	}
	x.ctx = grpc.NewContextWithServerTransportStream(x.ctx, transportStream{x})
	if enc, _ := (&Request{Header: f.Fields}).Get("grpc-encoding"); enc != "" && enc != "identity" && err == nil {
		err = status.Errorf(codes.Unimplemented, "grpc: Decompressor is not installed for grpc-encoding %q", enc)
	}
	l.wg.Add(1)
	l.s.run(func() {
		defer l.wg.Done()
		if err == nil {
			err = d.Handler(nil, x)
		}
		x.cancel()
		l.with(func() {
			x.finish(err)
			l.down.touch() // what a unary handler sent waits here even if the stream is gone
		})
	})
}

// incoming returns the call's metadata as grpc-go's server gives it to handlers, and its
// grpc-timeout.
func incoming(fields []hpack.HeaderField) (metadata.MD, time.Duration, error) {
	md := metadata.MD{}
	var timeout time.Duration
	for _, f := range fields {
		switch {
		case f.Name == "grpc-timeout":
			d, err := decodeTimeout(f.Value)
			if err != nil {
				return md, 0, status.Errorf(codes.Internal, "malformed grpc-timeout: %v", err)
			}
			timeout = d
		case f.Name == ":authority", f.Name == "content-type", f.Name == "user-agent":
			md[f.Name] = append(md[f.Name], f.Value)
		case f.Name[0] == ':' || f.Name == "te" || strings.HasPrefix(f.Name, "grpc-"):
		case strings.HasSuffix(f.Name, "-bin"):
			v, err := decodeBinary(f.Value)
			if err != nil {
				return md, 0, status.Errorf(codes.Internal, "malformed binary metadata %s: %v", f.Name, err)
			}
			md[f.Name] = append(md[f.Name], v)
		default:
			md[f.Name] = append(md[f.Name], f.Value)
		}
	}
	return md, timeout, nil
}

func decodeBinary(v string) (string, error) {
	if len(v)%4 == 0 {
		b, err := base64.StdEncoding.DecodeString(v)
		return string(b), err
	}
	b, err := base64.RawStdEncoding.DecodeString(v)
	return string(b), err
}

// decodeTimeout parses a grpc-timeout value: at most 8 digits and a unit.
func decodeTimeout(v string) (time.Duration, error) {
	if len(v) < 2 || len(v) > 9 {
		return 0, fmt.Errorf("%q is not 1 to 8 digits and a unit", v)
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, fmt.Errorf("%q has no unit (H, M, S, m, u, n)", v)
	}
	n, err := strconv.ParseUint(v[:len(v)-1], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q: %v", v, err)
	}
	return time.Duration(n) * unit, nil
}

// feed takes request bytes from the caller (with the link held).
func (x *served) feed(data []byte, end bool) {
	x.in = append(x.in, data...)
	x.inEnd = end
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

func (x *served) Context() context.Context { return x.ctx }
func (x *served) Method() string           { return x.method }

func (x *served) SetHeader(md metadata.MD) error {
	x.l.mu.Lock()
	defer x.l.mu.Unlock()
	if x.headerSent {
		return status.Error(codes.Internal, "grpcrelay: SetHeader after the header was sent")
	}
	x.header = metadata.Join(x.header, md)
	return nil
}

func (x *served) SendHeader(md metadata.MD) error {
	if err := x.SetHeader(md); err != nil {
		return err
	}
	x.send(x.sendHeader)
	return nil
}

// send runs fn, which frames part of the answer, with the link held, and flushes it unless
// the handler is unary: then finish flushes it all at once.
func (x *served) send(fn func()) {
	if x.unary {
		var t touched
		x.l.locked(&t, fn)
		return
	}
	x.l.with(fn)
}

func (x *served) SetTrailer(md metadata.MD) {
	x.l.mu.Lock()
	x.trailer = metadata.Join(x.trailer, md)
	x.l.mu.Unlock()
}

// transportStream is x as grpc.MethodFromServerStream and grpc.SetHeader find it.
type transportStream struct{ *served }

func (t transportStream) SetTrailer(md metadata.MD) error {
	t.served.SetTrailer(md)
	return nil
}

// sendHeader frames the response header once (with the link held).
func (x *served) sendHeader() {
	if x.headerSent || x.l.down.streams[x.s.id] != x.s {
		return
	}
	x.headerSent = true
	x.s.respHeaders = true
	f := []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}}
	x.l.down.writeHeaders(x.s.id, appendMD(f, x.header), false)
}

// SendMsg sends one message, m a *[]byte.
func (x *served) SendMsg(m any) error {
	b, ok := m.(*[]byte)
	if !ok {
		return status.Errorf(codes.Internal, "grpcrelay: SendMsg takes *[]byte, not %T", m)
	}
	msg := make([]byte, 5+len(*b))
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(*b)))
	copy(msg[5:], *b)
	var err error
	x.send(func() {
		if x.l.down.streams[x.s.id] != x.s {
			err = io.EOF
			return
		}
		x.sendHeader()
		x.l.push(x.s, &x.s.resp, msg)
	})
	return err
}

// RecvMsg takes the next request message into m, a *[]byte; io.EOF after the last.
func (x *served) RecvMsg(m any) error {
	b, ok := m.(*[]byte)
	if !ok {
		return status.Errorf(codes.Internal, "grpcrelay: RecvMsg takes *[]byte, not %T", m)
	}
	for {
		x.l.mu.Lock()
		in, end := x.in, x.inEnd
		if len(in) >= 5 {
			n := int(binary.BigEndian.Uint32(in[1:5]))
			if in[0] != 0 {
				x.l.mu.Unlock()
				return status.Error(codes.Internal, "grpc: compressed message without grpc-encoding")
			}
			if len(in) >= 5+n {
				*b = append((*b)[:0], in[5:5+n]...)
				x.in = in[5+n:]
				x.l.mu.Unlock()
				return nil
			}
		}
		x.l.mu.Unlock()
		if end {
			if len(in) > 0 {
				return status.Error(codes.Internal, "grpc: the request ended inside a message")
			}
			return io.EOF
		}
		select {
		case <-x.wake:
		case <-x.ctx.Done():
			return status.FromContextError(x.ctx.Err()).Err()
		}
	}
}

// finish ends the stream with the handler's result (with the link held): the header if it is
// still due, then the trailers after the data that waits for window.
func (x *served) finish(err error) {
	s := x.s
	if x.l.down.streams[s.id] != s {
		return
	}
	st := status.Convert(err)
	var f []hpack.HeaderField
	if !x.headerSent && len(x.header) == 0 {
		f = append(f, hpack.HeaderField{Name: ":status", Value: "200"}, hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
		x.headerSent, s.respHeaders = true, true // a trailers-only answer
	} else {
		x.sendHeader()
	}
	f = append(f, hpack.HeaderField{Name: "grpc-status", Value: strconv.Itoa(int(st.Code()))})
	if m := st.Message(); m != "" {
		f = append(f, hpack.HeaderField{Name: "grpc-message", Value: encodeGRPCMessage(m)})
	}
	if p := st.Proto(); len(p.GetDetails()) > 0 {
		if b, err := proto.Marshal(p); err == nil {
			f = append(f, hpack.HeaderField{Name: "grpc-status-details-bin", Value: base64.RawStdEncoding.EncodeToString(b)})
		}
	}
	s.resp.trailers = appendMD(f, x.trailer)
	s.resp.end = true
	s.rstAfter = !s.req.end // the caller may still be sending: stop it once it has the answer
	x.l.push(s, &s.resp, nil)
}

// appendMD appends md as header fields, binary values base64-encoded.
func appendMD(f []hpack.HeaderField, md metadata.MD) []hpack.HeaderField {
	for k, vs := range md {
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.RawStdEncoding.EncodeToString([]byte(v))
			}
			f = append(f, hpack.HeaderField{Name: k, Value: v})
		}
	}
	return f
}
