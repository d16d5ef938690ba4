package config

import (
	"encoding/json"
	"fmt"
	"strings"
)

// URLs are the base URLs of Restate's nodes (ingress or admin API): one URL, several (one per
// node), or one whose host name resolves to several addresses, as a Kubernetes headless Service
// does, each address then a node. A config file gives them as a string (one URL, or several
// comma-separated, as the annotations do) or a list.
type URLs []string

// SplitURLs reads a comma-separated list of URLs.
func SplitURLs(s string) URLs {
	var us URLs
	for u := range strings.SplitSeq(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			us = append(us, u)
		}
	}
	return us
}

// UnmarshalJSON takes a string or a list of strings.
func (u *URLs) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*u = SplitURLs(s)
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("want a URL, comma-separated URLs or a list of URLs, got %s", b)
	}
	*u = URLs(l)
	return nil
}

// MarshalJSON writes one URL as a string, as before lists were allowed.
func (u URLs) MarshalJSON() ([]byte, error) {
	if len(u) == 1 {
		return json.Marshal(u[0])
	}
	return json.Marshal([]string(u))
}

func (u URLs) String() string { return strings.Join(u, ",") }

func checkURLs(bad func(string, string, ...any), field string, us URLs) {
	if len(us) == 0 {
		checkURL(bad, field, "")
		return
	}
	seen := map[string]bool{}
	for i, u := range us {
		f := field
		if len(us) > 1 {
			f = fmt.Sprintf("%s[%d]", field, i)
		}
		checkURL(bad, f, u)
		if seen[strings.TrimSuffix(u, "/")] {
			bad(f, "%q is listed twice", u)
		}
		seen[strings.TrimSuffix(u, "/")] = true
	}
}
