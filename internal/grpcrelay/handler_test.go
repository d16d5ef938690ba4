package grpcrelay_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/grpcrelay"
	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
)

// TestHandler: a stream the relay serves itself behaves, for the handler and for the caller,
// as a grpc-go server's does.
func TestHandler(t *testing.T) {
	seen := make(chan string, 1)
	handler := func(_ any, s grpc.ServerStream) error {
		ctx := s.Context()
		method, _ := grpc.MethodFromServerStream(s)
		md, _ := metadata.FromIncomingContext(ctx)
		var req []byte
		if err := s.RecvMsg(&req); err != nil {
			return err
		}
		switch string(req) {
		case "echo":
			if err := s.RecvMsg(&req); err != io.EOF {
				return status.Errorf(codes.InvalidArgument, "second RecvMsg: %v, want EOF", err)
			}
			s.SetHeader(metadata.Pairs("x-method", method, "x-bin-bin", md.Get("x-in-bin")[0]))
			s.SetTrailer(metadata.Pairs("x-trailer", "t"))
			out := []byte("echo:" + md.Get("x-in")[0])
			return s.SendMsg(&out)
		case "details":
			st, _ := status.New(codes.AlreadyExists, "exists").WithDetails(&errdetails.ResourceInfo{ResourceName: "r1"})
			return st.Err()
		case "deadline":
			d, ok := ctx.Deadline()
			seen <- time.Until(d).Round(time.Second).String() + map[bool]string{true: "", false: " (none)"}[ok]
			return s.SendMsg(&req)
		case "wait":
			<-ctx.Done()
			seen <- ctx.Err().Error()
			return ctx.Err()
		}
		return status.Error(codes.Unimplemented, string(req))
	}
	cc, _ := relay(t, func(*grpcrelay.Request) grpcrelay.Decision {
		return grpcrelay.Decision{Handler: handler, MaxRequestMessage: 1 << 20}
	}, nil)
	call := func(ctx context.Context, req string, opts ...grpc.CallOption) (string, error) {
		in, out := []byte(req), []byte(nil)
		err := cc.Invoke(ctx, "/x.Svc/Do", &in, &out, append(opts, grpc.ForceCodecV2(rawcodec.Codec))...)
		return string(out), err
	}

	t.Run("message, metadata, header and trailer", func(t *testing.T) {
		var hdr, trl metadata.MD
		ctx := metadata.AppendToOutgoingContext(testCtx(t), "x-in", "v", "x-in-bin", "\x00\xff")
		got, err := call(ctx, "echo", grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil || got != "echo:v" {
			t.Fatalf("got %q, %v, want echo:v", got, err)
		}
		if hdr.Get("x-method")[0] != "/x.Svc/Do" || hdr.Get("x-bin-bin")[0] != "\x00\xff" || trl.Get("x-trailer")[0] != "t" {
			t.Errorf("header %v, trailer %v: want x-method, x-bin-bin and x-trailer", hdr, trl)
		}
	})
	t.Run("status with details", func(t *testing.T) {
		_, err := call(testCtx(t), "details")
		st := status.Convert(err)
		if st.Code() != codes.AlreadyExists || st.Message() != "exists" || len(st.Details()) != 1 {
			t.Fatalf("got %v %q %v, want AlreadyExists exists with one detail", st.Code(), st.Message(), st.Details())
		}
		if ri, ok := st.Details()[0].(*errdetails.ResourceInfo); !ok || ri.ResourceName != "r1" {
			t.Errorf("detail %v, want ResourceInfo r1", st.Details()[0])
		}
	})
	t.Run("the caller's deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 7*time.Second)
		defer cancel()
		if _, err := call(ctx, "deadline"); err != nil {
			t.Fatal(err)
		}
		if got := <-seen; got != "7s" {
			t.Errorf("the handler's deadline is %s from now, want 7s", got)
		}
	})
	t.Run("the caller's cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		errc := make(chan error, 1)
		go func() { _, err := call(ctx, "wait"); errc <- err }()
		time.Sleep(100 * time.Millisecond)
		cancel()
		select {
		case got := <-seen:
			if got != context.Canceled.Error() {
				t.Errorf("the handler's context ended with %q, want %q", got, context.Canceled)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the handler's context did not end after the caller cancelled")
		}
		if err := <-errc; status.Code(err) != codes.Canceled {
			t.Errorf("caller got %v, want Canceled", err)
		}
	})
	t.Run("over the size limit", func(t *testing.T) {
		_, err := call(testCtx(t), strings.Repeat("x", 2<<20))
		if st := status.Convert(err); st.Code() != codes.ResourceExhausted {
			t.Errorf("got %v, want ResourceExhausted", st)
		}
	})
	t.Run("two request messages", func(t *testing.T) {
		s, err := cc.NewStream(testCtx(t), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/x.Svc/Do", grpc.ForceCodecV2(rawcodec.Codec))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"echo", "more"} {
			b := []byte(m)
			s.SendMsg(&b)
		}
		s.CloseSend()
		var out []byte
		err = s.RecvMsg(&out)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "second RecvMsg") {
			t.Errorf("got %v, want InvalidArgument from the handler's second RecvMsg", err)
		}
		if errors.Is(err, io.EOF) {
			t.Error("stream ended without a status")
		}
	})
}

// TestRequestEndedByHeaders: a request may end with a header block instead of END_STREAM on
// its data (HTTP/2 trailers); gRPC clients do not, but the relay must still end it.
func TestRequestEndedByHeaders(t *testing.T) {
	cc, _, _ := relayLogged(t, func(*grpcrelay.Request) grpcrelay.Decision {
		return grpcrelay.Decision{Handler: func(_ any, s grpc.ServerStream) error {
			var req []byte
			if err := s.RecvMsg(&req); err != nil {
				return err
			}
			if err := s.RecvMsg(&req); err != io.EOF {
				return status.Errorf(codes.Internal, "second RecvMsg: %v, want EOF", err)
			}
			return status.Error(codes.AlreadyExists, "ended")
		}}
	}, nil, nil)
	c, fr := dialRaw(t, cc.Target())
	defer c.Close()
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: callHeaders(), EndHeaders: true})
	fr.WriteData(1, false, []byte{0, 0, 0, 0, 2, 'h', 'i'})
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	enc.WriteField(hpack.HeaderField{Name: "x-trailer", Value: "1"})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamEnded() {
			var got string
			for _, hf := range h.Fields {
				if hf.Name == "grpc-status" {
					got = hf.Value
				}
			}
			if want := strconv.Itoa(int(codes.AlreadyExists)); got != want {
				t.Errorf("grpc-status %q, want %s (the handler saw the request end): %v", got, want, h.Fields)
			}
			return
		}
	}
}

// TestLocalWithoutServer: a Local decision on a Server without Local fails the call, not the
// sidecar.
func TestLocalWithoutServer(t *testing.T) {
	cc, _ := relay(t, func(*grpcrelay.Request) grpcrelay.Decision { return grpcrelay.Decision{Local: true} }, nil)
	err := cc.Invoke(testCtx(t), "/x.Svc/Do", &[]byte{}, &[]byte{}, grpc.ForceCodecV2(rawcodec.Codec))
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "no local server") {
		t.Errorf("got %v, want Unavailable: no local server", err)
	}
}

// TestAnswerWrites: a Unary handler's header, message and trailers reach the caller in one
// write, as a grpc-go server sends a unary answer, so the caller wakes once for them; a
// streaming handler's message goes out when it is sent, before the trailers.
func TestAnswerWrites(t *testing.T) {
	for _, tc := range []struct {
		name  string
		unary bool
		want  int
	}{
		{"unary", true, 1},
		{"streaming", false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			rl := &recordingListener{Listener: l}
			r := &grpcrelay.Server{Director: func(*grpcrelay.Request) grpcrelay.Decision {
				return grpcrelay.Decision{Unary: tc.unary, Handler: func(_ any, s grpc.ServerStream) error {
					var req []byte
					if err := s.RecvMsg(&req); err != nil {
						return err
					}
					s.SetTrailer(metadata.Pairs("x-trailer", "t"))
					return s.SendMsg(&req)
				}}
			}}
			go r.Serve(rl)
			t.Cleanup(r.Close)

			c := rawCall(t, rl, func(fr *http2.Framer) {
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: callHeaders(), EndHeaders: true})
				fr.WriteData(1, true, []byte{0, 0, 0, 0, 2, 'h', 'i'})
			})
			defer c.Close()
			// Count the relay's writes that carry the answer's HEADERS or DATA.
			got := 0
			for _, w := range rl.writes() {
				rf := http2.NewFramer(nil, bytes.NewReader(w))
				for {
					f, err := rf.ReadFrame()
					if err != nil {
						break
					}
					if h := f.Header(); h.StreamID == 1 && (h.Type == http2.FrameHeaders || h.Type == http2.FrameData) {
						got++
						break
					}
				}
			}
			if got != tc.want {
				t.Errorf("the answer took %d writes, want %d", got, tc.want)
			}
		})
	}
}

// rawCall connects to rl as an HTTP/2 client, exchanges SETTINGS (then clears rl's record, so
// that it holds the call's writes only), sends what call frames in one write, and reads until
// stream 1 ends.
func rawCall(t *testing.T, rl *recordingListener, call func(*http2.Framer)) net.Conn {
	t.Helper()
	c, fr := dialRaw(t, rl.Addr().String())
	for acked := false; !acked; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the relay's settings: %v", err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && s.IsAck() {
			acked = true
		} else if ok {
			fr.WriteSettingsAck()
		}
	}
	rl.reset()
	var out bytes.Buffer
	call(http2.NewFramer(&out, nil))
	c.Write(out.Bytes())
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if h := f.Header(); h.StreamID == 1 && h.Type == http2.FrameHeaders && h.Flags.Has(http2.FlagHeadersEndStream) {
			return c
		}
	}
}

// dialRaw connects to the relay at addr as an HTTP/2 client: preface and SETTINGS sent.
func dialRaw(t *testing.T, addr string) (net.Conn, *http2.Framer) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	return c, fr
}

// callHeaders is the header block of a gRPC call to /x.Svc/Do.
func callHeaders() []byte {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/x.Svc/Do"}, {":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return hb.Bytes()
}

// recordingListener records what is written to the connections it accepts.
type recordingListener struct {
	net.Listener
	mu sync.Mutex
	w  [][]byte
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, l: l}, nil
}

func (l *recordingListener) reset() {
	l.mu.Lock()
	l.w = nil
	l.mu.Unlock()
}

func (l *recordingListener) writes() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w
}

type recordingConn struct {
	net.Conn
	l *recordingListener
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.l.mu.Lock()
	c.l.w = append(c.l.w, bytes.Clone(p))
	c.l.mu.Unlock()
	return c.Conn.Write(p)
}

// TestPingAcks: the ack of a PING that comes with a call goes out with the call's answer, as
// one write, so that grpc-go's BDP pings cost its caller no wake-up of their own; a PING with
// nothing to travel with is acked alone within the hold.
func TestPingAcks(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordingListener{Listener: l}
	r := &grpcrelay.Server{Director: func(*grpcrelay.Request) grpcrelay.Decision {
		return grpcrelay.Decision{Unary: true, Handler: func(_ any, s grpc.ServerStream) error {
			var req []byte
			if err := s.RecvMsg(&req); err != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond) // an ack not held would go out meanwhile
			return s.SendMsg(&req)
		}}
	}}
	grpcrelay.SetAckHold(r, 5*time.Second) // no timer races the answer, however slow the machine
	go r.Serve(rl)
	t.Cleanup(r.Close)

	// A PING and a call in one write, as grpc-go's client sends its BDP ping with a call.
	c := rawCall(t, rl, func(fr *http2.Framer) {
		fr.WritePing(false, [8]byte{1})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: callHeaders(), EndHeaders: true})
		fr.WriteData(1, true, []byte{0, 0, 0, 0, 2, 'h', 'i'})
	})
	defer c.Close()
	var got []string
	for _, w := range rl.writes() {
		var kinds []string
		rf := http2.NewFramer(nil, bytes.NewReader(w))
		for {
			f, err := rf.ReadFrame()
			if err != nil {
				break
			}
			switch f := f.(type) {
			case *http2.PingFrame:
				kinds = append(kinds, "ping ack")
			case *http2.HeadersFrame:
				if f.StreamEnded() {
					kinds = append(kinds, "trailers")
				}
			}
		}
		if len(kinds) > 0 {
			slices.Sort(kinds)
			got = append(got, strings.Join(kinds, "+"))
		}
	}
	if want := []string{"ping ack+trailers"}; !slices.Equal(got, want) {
		t.Errorf("writes %q, want %q", got, want)
	}

	t.Run("alone", func(t *testing.T) {
		r := &grpcrelay.Server{Director: func(*grpcrelay.Request) grpcrelay.Decision { return grpcrelay.Decision{} }}
		grpcrelay.SetAckHold(r, 50*time.Millisecond)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go r.Serve(l)
		t.Cleanup(r.Close)
		c, fr := dialRaw(t, l.Addr().String())
		defer c.Close()
		fr.WritePing(false, [8]byte{7})
		start := time.Now()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("no ack of a lone PING: %v", err)
			}
			if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
				if p.Data != [8]byte{7} {
					t.Errorf("ack data %v, want the PING's", p.Data)
				}
				if d := time.Since(start); d < 40*time.Millisecond {
					t.Errorf("the ack came after %s, before the hold of 50ms", d)
				}
				return
			}
		}
	})
}

// TestWorkersReused: handlers run on workers that outlive them, as many as there are calls in
// flight, so later calls run on goroutines whose stacks have already grown.
func TestWorkersReused(t *testing.T) {
	inFlight := runtime.GOMAXPROCS(0) + 4
	ran := map[string]bool{} // the goroutines handlers ran on
	arrived := make(chan string, inFlight)
	release := make(chan struct{})
	handler := func(_ any, s grpc.ServerStream) error {
		var req []byte
		if err := s.RecvMsg(&req); err != nil {
			return err
		}
		arrived <- goroutineID()
		<-release
		return s.SendMsg(&req)
	}
	cc, _ := relay(t, func(*grpcrelay.Request) grpcrelay.Decision {
		return grpcrelay.Decision{Handler: handler, Unary: true}
	}, nil)
	batch := func() (ids []string) {
		release = make(chan struct{})
		var wg sync.WaitGroup
		for range inFlight {
			wg.Go(func() {
				in, out := []byte("x"), []byte(nil)
				if err := cc.Invoke(testCtx(t), "/x.Svc/Do", &in, &out, grpc.ForceCodecV2(rawcodec.Codec)); err != nil {
					t.Error(err)
				}
			})
		}
		for range inFlight {
			ids = append(ids, <-arrived)
		}
		close(release)
		wg.Wait()
		return ids
	}
	for _, id := range batch() {
		ran[id] = true
	}
	// The workers go back to waiting just after their callers have the answer; a batch that
	// comes before they do starts new workers, which the next try may use.
	for try := 1; try <= 5; try++ {
		time.Sleep(time.Duration(try) * 50 * time.Millisecond)
		var fresh []string
		for _, id := range batch() {
			if !ran[id] {
				fresh = append(fresh, id)
				ran[id] = true
			}
		}
		if len(fresh) == 0 {
			return
		}
		t.Logf("try %d: handlers ran on goroutines %v, not on earlier workers", try, fresh)
	}
	t.Errorf("in five more batches of %d calls, handlers kept running on new goroutines", inFlight)
}

// goroutineID is the id runtime.Stack prints for the calling goroutine.
func goroutineID() string {
	b := make([]byte, 64)
	b = b[:runtime.Stack(b, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(b), "goroutine "), " ")
	return id
}
