package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzParse: any input either fails with an error or gives a config that validates and
// survives a round trip through Marshal unchanged.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"outbound: {ingress: 'http://r:8080', routes: [{match: 'a.B/*', target: object, key: 'metadata:k'}]}",
		"outbound: {ingress: 'http://r:8080', routes: [{match: '*', mode: send, delay: PT5S}]}",
		`{"outbound": {"ingress": "http://r:8080", "routes": [{"match": "a.B/C", "target": "workflow", "key": "field:a.b"}]}}`,
		"inbound: {app: '127.0.0.1:1', services: [{name: a.B, kind: workflow, handlers: {Run: run, Get: shared}}]}",
		"outbound: {routes: [{match: '[', delay: -1s}]}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", err)
		}
		out, err := Marshal(c)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(c)): %v\n%s", err, out)
		}
		if diff := cmp.Diff(c, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip changed the config (-before +after):\n%s", diff)
		}
	})
}

// FuzzParseDuration: no input panics, and every accepted duration is non-negative.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"5s", "PT1M30S", "P1DT2H", "-1s", "P", "PT0.5S", "1h2m3s4ms"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := ParseDuration(s); err == nil && d < 0 {
			t.Fatalf("ParseDuration(%q) = %v, negative", s, d)
		}
	})
}
