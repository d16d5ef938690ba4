package proxy_test

import (
	"testing"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/proxy"
)

// TestDefaultLimits: the relay's defaults are the configuration's, so that a relay built
// without a configuration holds as the sidecar does.
func TestDefaultLimits(t *testing.T) {
	want := proxy.Limits{
		MaxConcurrentStreams: config.DefaultMaxConcurrentStreams,
		MaxHeaderListSize:    config.DefaultMaxHeaderListBytes,
		MaxResetsPerSecond:   config.DefaultMaxResetsPerSecond,
		PrefaceTimeout:       config.DefaultPrefaceTimeout,
		IdleTimeout:          config.DefaultIdleTimeout,
		UpstreamIdleTimeout:  config.DefaultUpstreamIdleTimeout,
		KeepaliveInterval:    config.DefaultKeepaliveInterval,
		KeepaliveTimeout:     config.DefaultKeepaliveTimeout,
	}
	if got := proxy.DefaultLimits; got != want {
		t.Errorf("DefaultLimits = %+v, want the configuration's defaults %+v", got, want)
	}
}
