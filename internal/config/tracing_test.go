package config

import (
	"strings"
	"testing"
)

func TestTracingValidate(t *testing.T) {
	tests := []struct {
		name    string
		tracing string
		wantErr string // "" for valid
	}{
		{name: "grpc endpoint", tracing: `{otlpEndpoint: "http://otel:4317"}`},
		{name: "http with path", tracing: `{otlpEndpoint: "https://otel:4318/v1/traces", protocol: http/protobuf}`},
		{name: "ratio bounds", tracing: `{otlpEndpoint: "http://otel:4317", samplingRatio: 0}`},
		{name: "record keys", tracing: `{otlpEndpoint: "http://otel:4317", recordKeys: true}`},
		{name: "no endpoint", tracing: `{serviceName: shop, samplingRatio: 1}`},
		{name: "grpc with path", tracing: `{otlpEndpoint: "http://otel:4317/v1/traces"}`,
			wantErr: `tracing.otlpEndpoint: "http://otel:4317/v1/traces": an OTLP/gRPC endpoint has no path, got "/v1/traces"; for OTLP/HTTP set tracing.protocol: http/protobuf`},
		{name: "not a URL", tracing: `{otlpEndpoint: "otel:4317"}`,
			wantErr: `tracing.otlpEndpoint: want an http(s) URL such as http://restate:8080, got "otel:4317"`},
		{name: "protocol", tracing: `{protocol: http/json}`,
			wantErr: `tracing.protocol: "http/json" is not one of grpc, http/protobuf`},
		{name: "ratio", tracing: `{samplingRatio: 1.5}`,
			wantErr: "tracing.samplingRatio: want a ratio from 0 to 1 (the share of new traces sampled), got 1.5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte("inbound: {app: 127.0.0.1:1, services: [{name: a.B, handlers: {C: \"\"}}]}\ntracing: " + tc.tracing))
			got := ""
			if err != nil {
				got = strings.TrimPrefix(err.Error(), "invalid config: ")
			}
			if got != tc.wantErr {
				t.Errorf("got error %q, want %q", got, tc.wantErr)
			}
		})
	}
}
