package grpcrelay

import (
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
)

func TestDecodeTimeout(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1S", time.Second, true},
		{"250m", 250 * time.Millisecond, true},
		{"99999999n", 99999999, true},
		{"2H", 2 * time.Hour, true},
		{"5u", 5 * time.Microsecond, true},
		{"3M", 3 * time.Minute, true},
		{"S", 0, false},
		{"123456789S", 0, false},
		{"10x", 0, false},
		{"-1S", 0, false},
	}
	for _, tt := range tests {
		got, err := decodeTimeout(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("decodeTimeout(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestIsGRPC(t *testing.T) {
	tests := []struct {
		method, contentType string
		want                bool
	}{
		{"POST", "application/grpc", true},
		{"POST", "application/grpc+proto", true},
		{"POST", "application/grpc;charset=utf-8", true},
		{"POST", "application/grpcx", false},
		{"POST", "application/json", false},
		{"GET", "application/grpc", false},
	}
	for _, tt := range tests {
		r := &Request{Header: []hpack.HeaderField{{Name: ":method", Value: tt.method}, {Name: "content-type", Value: tt.contentType}}}
		if got := r.IsGRPC(); got != tt.want {
			t.Errorf("IsGRPC(%s %s) = %v, want %v", tt.method, tt.contentType, got, tt.want)
		}
	}
}
