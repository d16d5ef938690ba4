package soak

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Usage is one sidecar's resident memory and goroutines at a moment.
type Usage struct {
	At         time.Duration // since the run began
	Sidecar    string
	RSS        int64 // bytes, from /proc/PID/status (VmRSS)
	Goroutines int   // -1 when unknown
	// Source says where Goroutines comes from: "metrics" (go_goroutines, or
	// go_goroutine_count, on the health port's /metrics) or "threads (/proc)", the OS threads,
	// when the sidecar exposes no goroutine count.
	Source string
}

// Usage samples both sidecars now; a sidecar that is down is left out.
func (r *Rig) Usage(at time.Duration) []Usage {
	var out []Usage
	for _, s := range []*Sidecar{r.Outbound, r.Inbound} {
		pid := s.Pid()
		if pid == 0 {
			continue
		}
		u := Usage{At: at, Sidecar: s.Label, Goroutines: -1}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		u.RSS = statusField(status, "VmRSS:") * 1024
		if n, ok := s.goroutines(); ok {
			u.Goroutines, u.Source = n, "metrics"
		} else {
			u.Goroutines, u.Source = int(statusField(status, "Threads:")), "threads (/proc)"
		}
		out = append(out, u)
	}
	return out
}

// statusField reads a number after name in /proc/PID/status ("VmRSS:   1234 kB").
func statusField(status []byte, name string) int64 {
	for line := range bytes.Lines(status) {
		if rest, ok := bytes.CutPrefix(line, []byte(name)); ok {
			f := strings.Fields(string(rest))
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// goroutines reads the sidecar's goroutine count from its health port's /metrics, if it has one.
func (s *Sidecar) goroutines() (int, bool) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.health + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && (f[0] == "go_goroutines" || strings.HasPrefix(f[0], "go_goroutine_count")) {
			n, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				return int(n), true
			}
		}
	}
	return 0, false
}
