package durable

import (
	"testing"

	"github.com/restate-grpc/restate-grpc/internal/config"
)

func TestRoutesMatch(t *testing.T) {
	rs := routes{
		{Match: "orders.v1.Orders/Get*"},
		{Match: "orders.v1.Orders/*"},
		{Match: "billing.*"},
		{Match: "*"},
	}
	tests := []struct {
		method string
		want   int
	}{
		{"/orders.v1.Orders/GetOrder", 0},
		{"/orders.v1.Orders/AddItem", 1},
		{"/billing.v2.Invoices/Send", 2},
		{"/other.Svc/Do", 3},
	}
	for _, tc := range tests {
		got := rs.match(tc.method)
		if got != &rs[tc.want] {
			t.Errorf("match(%q) = %+v, want route %d", tc.method, got, tc.want)
		}
	}
	if got := (routes{{Match: "a.B/*"}}).match("/c.D/X"); got != nil {
		t.Errorf("match of an unrouted method = %+v, want nil", got)
	}
}

func TestIngressHeader(t *testing.T) {
	r := &config.Route{IdempotencyKey: config.Source{Metadata: "x-idem"}, AllowMetadata: []string{"cookie"}}
	md := map[string][]string{
		":authority": {"a"}, "content-type": {"application/grpc"}, "user-agent": {"grpc-go"},
		"grpc-timeout": {"1S"}, "restate-mode": {"send"}, "x-idem": {"k"}, "authorization": {"Bearer s"},
		"cookie": {"c=1"}, "x-tenant": {"t1"}, "trace-bin": {"\x00\x01"}, "traceparent": {"00-a-b-01"},
	}
	h := ingressHeader(md, r)
	want := map[string]string{"x-restate-grpc-cookie": "c=1", "x-tenant": "t1", "trace-bin": "AAE", "traceparent": "00-a-b-01"}
	if len(h) != len(want) {
		t.Errorf("forwarded %v, want exactly %v", h, want)
	}
	for k, v := range want {
		if got := h[k]; len(got) != 1 || got[0] != v {
			t.Errorf("header %s = %v, want %q", k, got, v)
		}
	}
}
