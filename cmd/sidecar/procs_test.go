package main

import (
	"runtime"
	"testing"
)

func TestSetProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	tests := []struct {
		name  string
		env   string // GOMAXPROCS
		start int
		n     int
		want  int
	}{
		{"capped", "", 4, 1, 1},
		{"never raised", "", 2, 8, 2},
		{"no cap", "", 3, 0, 3},
		{"GOMAXPROCS wins", "3", 3, 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GOMAXPROCS", tt.env)
			runtime.GOMAXPROCS(tt.start)
			if got := setProcs(tt.n); got != tt.want {
				t.Errorf("setProcs(%d) from %d = %d, want %d", tt.n, tt.start, got, tt.want)
			}
		})
	}
}
