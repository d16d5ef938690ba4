package inbound

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/http"

	"google.golang.org/protobuf/encoding/protowire"
)

// Restate says which attempt it runs only in the StartMessage, the first frame of the
// attempt's request body, which sdk-go reads and does not expose. A frame of the service
// protocol is a 64-bit big-endian header, the message type in its top 16 bits and the length
// in its low 32, then the protobuf message.
const (
	startMessageType = 0x0000
	// retryCountField is StartMessage.retry_count_since_last_stored_entry, a uint32.
	retryCountField protowire.Number = 7
	// maxStartPeek bounds what is read of a StartMessage ahead of sdk-go: it carries the
	// object's state (eager state), which may be large. The retry count follows the state in
	// the encoding, so past the bound it is not known, and the span goes without it.
	maxStartPeek = 64 << 10
)

type retryCountKey struct{}

// retryCount is the retry count withRetryCount found for the attempt of ctx.
func retryCount(ctx context.Context) (uint32, bool) {
	c, ok := ctx.Value(retryCountKey{}).(uint32)
	return c, ok
}

// withRetryCount reads the StartMessage that begins r's body and returns r with its retry
// count in the context, and a body that gives sdk-go every byte again, the ones read first.
func withRetryCount(r *http.Request) *http.Request {
	var hdr [8]byte
	n, err := io.ReadFull(r.Body, hdr[:])
	read := hdr[:n]
	ctx := r.Context()
	if err == nil {
		h := binary.BigEndian.Uint64(hdr[:])
		if h>>48 == startMessageType {
			length := uint32(h)
			msg := make([]byte, 8+min(length, maxStartPeek))
			copy(msg, hdr[:])
			m, _ := io.ReadFull(r.Body, msg[8:])
			read = msg[:8+m]
			if c, ok := parseRetryCount(read[8:], uint32(m) == length); ok {
				ctx = context.WithValue(ctx, retryCountKey{}, c)
			}
		}
	}
	r = r.WithContext(ctx)
	r.Body = replayBody{io.MultiReader(bytes.NewReader(read), r.Body), r.Body}
	return r
}

// parseRetryCount finds the retry count in msg, all of a StartMessage when complete, else
// its beginning: proto3 leaves a zero out, so only a complete message without it says 0.
func parseRetryCount(msg []byte, complete bool) (uint32, bool) {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return 0, false
		}
		msg = msg[n:]
		if num == retryCountField && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(msg)
			if n < 0 {
				return 0, false
			}
			return uint32(v), true
		}
		if n = protowire.ConsumeFieldValue(num, typ, msg); n < 0 {
			return 0, false
		}
		msg = msg[n:]
	}
	return 0, complete
}

// replayBody reads what was peeked, then the rest; closing closes the request's body.
type replayBody struct {
	io.Reader
	body io.Closer
}

func (b replayBody) Close() error { return b.body.Close() }
