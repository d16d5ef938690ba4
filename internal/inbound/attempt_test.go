package inbound

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// startFrame is a service-protocol frame of type typ holding a StartMessage with stateBytes
// of object state and, when retries > 0, its retry count (proto3 leaves a zero out).
func startFrame(typ uint16, stateBytes int, retries uint32) []byte {
	var m []byte
	m = protowire.AppendTag(m, 1, protowire.BytesType)
	m = protowire.AppendBytes(m, []byte("invocation-id"))
	m = protowire.AppendTag(m, 2, protowire.BytesType)
	m = protowire.AppendString(m, "inv_1")
	m = protowire.AppendTag(m, 3, protowire.VarintType)
	m = protowire.AppendVarint(m, 1)
	if stateBytes > 0 {
		var entry []byte
		entry = protowire.AppendTag(entry, 1, protowire.BytesType)
		entry = protowire.AppendBytes(entry, []byte("k"))
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendBytes(entry, make([]byte, stateBytes))
		m = protowire.AppendTag(m, 4, protowire.BytesType)
		m = protowire.AppendBytes(m, entry)
	}
	if retries > 0 {
		m = protowire.AppendTag(m, retryCountField, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(retries))
	}
	m = protowire.AppendTag(m, 9, protowire.VarintType)
	m = protowire.AppendVarint(m, 42)
	frame := binary.BigEndian.AppendUint64(nil, uint64(typ)<<48|uint64(len(m)))
	return append(frame, m...)
}

// TestRetryCount: the retry count comes from the StartMessage when it is there to read, and
// sdk-go gets the body unchanged either way.
func TestRetryCount(t *testing.T) {
	tests := []struct {
		name    string
		body    []byte
		want    uint32
		wantOK  bool
		trailer bool // more frames follow the first
	}{
		{name: "first attempt", body: startFrame(startMessageType, 0, 0), want: 0, wantOK: true},
		{name: "third attempt", body: startFrame(startMessageType, 0, 2), want: 2, wantOK: true, trailer: true},
		{name: "with state", body: startFrame(startMessageType, 1000, 5), want: 5, wantOK: true},
		{name: "state past the bound", body: startFrame(startMessageType, maxStartPeek, 5)},
		{name: "not a StartMessage", body: startFrame(0x0400, 0, 3)},
		{name: "short body", body: []byte{0, 0, 0}},
		{name: "truncated frame", body: startFrame(startMessageType, 0, 4)[:12]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body
			if tc.trailer {
				body = append(append([]byte(nil), body...), startFrame(0x0400, 10, 0)...)
			}
			r := httptest.NewRequest(http.MethodPost, "/invoke/a.B/C", bytes.NewReader(body))
			r = withRetryCount(r)
			got, ok := retryCount(r.Context())
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("got %d, %v; want %d, %v", got, ok, tc.want, tc.wantOK)
			}
			rest, err := io.ReadAll(r.Body)
			if err != nil || !bytes.Equal(rest, body) {
				t.Errorf("body read again: %d bytes (error %v), want the %d sent", len(rest), err, len(body))
			}
		})
	}
}

// FuzzRetryCount: whatever a peer sends, reading the retry count neither fails nor changes
// the body sdk-go reads.
func FuzzRetryCount(f *testing.F) {
	f.Add(startFrame(startMessageType, 0, 3))
	f.Add(startFrame(startMessageType, 100, 0)[:20])
	f.Add([]byte{0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x38})
	f.Fuzz(func(t *testing.T, body []byte) {
		r := withRetryCount(httptest.NewRequest(http.MethodPost, "/invoke/a.B/C", bytes.NewReader(body)))
		retryCount(r.Context())
		if rest, err := io.ReadAll(r.Body); err != nil || !bytes.Equal(rest, body) {
			t.Errorf("body read again: %x (error %v), want %x", rest, err, body)
		}
	})
}
