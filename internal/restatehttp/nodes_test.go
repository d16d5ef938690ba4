package restatehttp

import (
	"net/http"
	"testing"
	"time"
)

// TestBackoff: a failed node is out for 0.5 s, twice as long after each failure in a row, never
// more than 15 s.
func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		fails int
		want  time.Duration
	}{{1, 500 * time.Millisecond}, {2, time.Second}, {3, 2 * time.Second}, {5, 8 * time.Second}, {6, 15 * time.Second}, {1000, 15 * time.Second}} {
		if got := backoff(tc.fails); got != tc.want {
			t.Errorf("backoff(%d) = %s, want %s", tc.fails, got, tc.want)
		}
	}
}

// TestServiceUnknown: the answers of a node that lacks the schema, as Restate 1.7 words them,
// and not a handler's own 404 or an invocation Restate does not have.
func TestServiceUnknown(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int
		body string
		want bool
	}{
		{"service", 404, `{"code":404,"message":"service 'echo.Echo' not found, make sure to register the service before calling it.","source":"ingress"}`, true},
		{"handler", 404, `{"code":404,"message":"the service 'greeter.Greeter' exists, but the handler 'Nope' was not found, check that the handler exists in the latest registered service version.","source":"ingress"}`, true},
		{"invocation", 404, `{"code":404,"message":"not found","source":"invocation"}`, false},
		{"handler's own 404", 404, `{"code":404,"message":"service 'x' not found","source":"invocation"}`, false},
		{"not JSON", 404, `not found`, false},
		{"another status", 400, `{"code":400,"message":"service 'x' not found","source":"ingress"}`, false},
	} {
		if got := serviceUnknown(&http.Response{StatusCode: tc.code}, []byte(tc.body)); got != tc.want {
			t.Errorf("%s: serviceUnknown = %v, want %v", tc.name, got, tc.want)
		}
	}
}
