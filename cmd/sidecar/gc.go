package main

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// defaultGCPercent is the sidecar's GOGC. Its live heap is a few MiB, so at Go's default of
// 100 it collects many times a second under load: in a profile of a passthrough sidecar at 16
// callers, collection was an eighth of its CPU, and each cycle slows the calls it overlaps on
// the sidecar's one core. At 400 the heap stays in the tens of MiB, well inside the injected
// limit, and the memory limit below bounds it anyway.
const defaultGCPercent = 400

// cgroupMemoryMax lists where a container's memory limit is read: cgroup v2, then v1.
var cgroupMemoryMax = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// setGC sets the collector's target to percent (GOGC; 0 leaves Go's default) and a soft memory
// limit of 90% of the container's memory limit, if it has one, so that a heap allowed to grow
// collects harder before the kernel's OOM killer would act. The GOGC and GOMEMLIMIT variables
// win. It returns the settings in effect: GOGC, and the memory limit in bytes (0: none).
func setGC(percent int) (gogc int, memLimit int64) {
	gogc = 100
	switch v := os.Getenv("GOGC"); {
	case v != "":
		gogc, _ = strconv.Atoi(v) // "off" reads as 0
	case percent > 0:
		debug.SetGCPercent(percent)
		gogc = percent
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if limit := containerMemoryLimit(cgroupMemoryMax); limit > 0 {
			debug.SetMemoryLimit(limit / 10 * 9)
		}
	}
	if l := debug.SetMemoryLimit(-1); l != 1<<63-1 {
		memLimit = l
	}
	return gogc, memLimit
}

// containerMemoryLimit reads the memory limit of the cgroup the process runs in from the first
// of files that exists; 0 when there is none ("max", or v1's near-2^63 for no limit).
func containerMemoryLimit(files []string) int64 {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<62 {
			return 0
		}
		return n
	}
	return 0
}
