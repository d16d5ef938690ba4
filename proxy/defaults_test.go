package proxy

import (
	"testing"
	"time"

	"github.com/restate-grpc/restate-grpc/internal/config"
)

// TestDefaultsAsConfig: a Limits field left zero means what the same field of package config
// means by default.
func TestDefaultsAsConfig(t *testing.T) {
	tests := []struct {
		name      string
		got, want time.Duration
	}{
		{"PrefaceTimeout", defaultPrefaceTimeout, config.DefaultPrefaceTimeout},
		{"IdleTimeout", defaultIdleTimeout, config.DefaultIdleTimeout},
		{"UpstreamIdleTimeout", defaultUpstreamIdleTimeout, config.DefaultUpstreamIdleTimeout},
		{"KeepaliveInterval", defaultKeepaliveInterval, config.DefaultKeepaliveInterval},
		{"KeepaliveTimeout", defaultKeepaliveTimeout, config.DefaultKeepaliveTimeout},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("default %s = %s, want %s as package config", tt.name, tt.got, tt.want)
		}
	}
}
