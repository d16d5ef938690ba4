package proxy

import (
	"testing"

	"golang.org/x/net/http2/hpack"
)

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
