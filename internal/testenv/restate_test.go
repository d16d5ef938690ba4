package testenv

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

// TestRetryBind: a start that lost a port is tried again in a fresh dir, at most five times;
// any other failure is not retried.
func TestRetryBind(t *testing.T) {
	lost := fmt.Errorf("exited before it was healthy: %w", errAddrInUse)
	other := errors.New("exited before it was healthy")
	for _, tc := range []struct {
		name      string
		fails     []error
		wantTries int
		wantErr   error
	}{
		{"first try", nil, 1, nil},
		{"port lost twice", []error{lost, lost}, 3, nil},
		{"port lost every time", []error{lost, lost, lost, lost, lost, lost}, 5, errAddrInUse},
		{"other failure", []error{other, lost}, 1, other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			var dirs []string
			_, err := retryBind(base, func(dir string) (int, error) {
				dirs = append(dirs, dir)
				if len(dirs) <= len(tc.fails) {
					return 0, tc.fails[len(dirs)-1]
				}
				return 1, nil
			})
			if len(dirs) != tc.wantTries || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Errorf("tries %d, error %v; want %d tries, error %v", len(dirs), err, tc.wantTries, tc.wantErr)
			}
			for i := 1; i < len(dirs); i++ {
				if filepath.Dir(dirs[i]) != dirs[i-1] || dirs[i] == dirs[i-1] {
					t.Errorf("try %d in %s after %s, want a new dir under the last", i+1, dirs[i], dirs[i-1])
				}
			}
		})
	}
}
