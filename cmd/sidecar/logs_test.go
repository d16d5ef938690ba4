package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunLogFormat: the log format comes from --log-format, else the config's logFormat,
// else text.
func TestRunLogFormat(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		flags        []string
		wantJSON     bool
	}{
		{"default", "outbound: {listen: 127.0.0.1:0}", nil, false},
		{"config", "{logFormat: json, outbound: {listen: 127.0.0.1:0}}", nil, true},
		{"flag", "outbound: {listen: 127.0.0.1:0}", []string{"--log-format", "json"}, true},
		{"flag over config", "{logFormat: json, outbound: {listen: 127.0.0.1:0}}", []string{"--log-format", "text"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sidecar.yaml")
			if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			// An ended context: the sidecar starts, logs, and stops at once.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			var out, errb bytes.Buffer
			if code := execute(ctx, append([]string{"run", "--config", path, "--health", ""}, tc.flags...), &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			first, _, _ := strings.Cut(errb.String(), "\n")
			var line struct{ Msg string }
			gotJSON := json.Unmarshal([]byte(first), &line) == nil && line.Msg == "starting"
			if gotJSON != tc.wantJSON || !strings.Contains(first, "starting") {
				t.Errorf("first line %q: JSON %t, want %t", first, gotJSON, tc.wantJSON)
			}
		})
	}
}
