package config

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that reads as a Go duration ("1m30s") or an ISO 8601 duration
// ("PT1M30S", "P1D"), the two forms Restate itself accepts for delays.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"30s\" or \"PT30S\", got %s", b)
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

var iso8601 = regexp.MustCompile(`^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$`)

// ParseDuration parses a non-negative Go or ISO 8601 (days and time part) duration.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration: want e.g. \"5s\", \"1m30s\" or \"PT1M30S\"")
	}
	var d time.Duration
	if s[0] == 'P' || s[0] == 'p' {
		m := iso8601.FindStringSubmatch(strings.ToUpper(s))
		if m == nil || s == "P" || strings.HasSuffix(strings.ToUpper(s), "T") {
			return 0, fmt.Errorf("bad duration %q: want a Go duration (\"5s\") or ISO 8601 (\"PT5S\")", s)
		}
		units := []time.Duration{24 * time.Hour, time.Hour, time.Minute, time.Second}
		for i, u := range units {
			if m[i+1] == "" {
				continue
			}
			f, err := strconv.ParseFloat(m[i+1], 64)
			if err != nil {
				return 0, fmt.Errorf("bad duration %q: %v", s, err)
			}
			d += time.Duration(f * float64(u))
		}
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("bad duration %q: want a Go duration (\"5s\") or ISO 8601 (\"PT5S\")", s)
		}
	}
	if d < 0 {
		return 0, fmt.Errorf("bad duration %q: must not be negative", s)
	}
	return d, nil
}
