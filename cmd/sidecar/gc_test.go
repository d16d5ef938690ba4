package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestContainerMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v2, max, v1none := write("memory.max", "268435456\n"), write("max", "max\n"), write("v1", "9223372036854771712\n")
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name  string
		files []string
		want  int64
	}{
		{"cgroup v2 limit", []string{v2}, 256 << 20},
		{"v2 without a limit", []string{max, v2}, 0},
		{"v1 without a limit", []string{missing, v1none}, 0},
		{"the first file that exists", []string{missing, v2}, 256 << 20},
		{"no cgroup files", []string{missing}, 0},
	}
	for _, tt := range tests {
		if got := containerMemoryLimit(tt.files); got != tt.want {
			t.Errorf("%s: got %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestSetGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	defer func(f []string) { cgroupMemoryMax = f }(cgroupMemoryMax)
	limit := filepath.Join(t.TempDir(), "memory.max")
	os.WriteFile(limit, []byte("1000000000"), 0o600)
	cgroupMemoryMax = []string{limit}
	tests := []struct {
		name           string
		gogc, memlimit string // the variables
		percent        int
		wantGOGC       int
		wantLimit      int64
	}{
		{"defaults", "", "", defaultGCPercent, defaultGCPercent, 900000000},
		{"GOGC wins", "50", "", defaultGCPercent, 50, 900000000},
		{"Go's default", "", "", 0, 100, 900000000},
		{"GOMEMLIMIT wins", "", "123MiB", defaultGCPercent, defaultGCPercent, 123 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GOGC", tt.gogc)
			t.Setenv("GOMEMLIMIT", tt.memlimit)
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(1<<63 - 1)
			if tt.memlimit != "" {
				debug.SetMemoryLimit(123 << 20) // as the runtime does from the variable at start
			}
			gogc, limit := setGC(tt.percent)
			if gogc != tt.wantGOGC || limit != tt.wantLimit {
				t.Errorf("setGC(%d) = %d, %d; want %d, %d", tt.percent, gogc, limit, tt.wantGOGC, tt.wantLimit)
			}
			if got := debug.SetGCPercent(100); tt.gogc == "" && got != tt.wantGOGC {
				t.Errorf("GC percent in effect %d, want %d", got, tt.wantGOGC)
			}
		})
	}
}
