package durable

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestDurableShedPushback: when Restate sheds a call (429, 503; a real server cannot be made
// to, so an httptest server answers as it would), the caller gets UNAVAILABLE saying so, and
// grpc-retry-pushback-ms from Retry-After (or a second without one) when that wait fits in
// its deadline. A handler's own 503 passes through as the app's status, with no pushback.
func TestDurableShedPushback(t *testing.T) {
	tests := []struct {
		name       string
		http       int
		retryAfter string
		body       string
		deadline   time.Duration
		code       codes.Code
		msg        string
		// pushback is the wanted grpc-retry-pushback-ms, from min to max (an HTTP date has
		// second precision); 0 for none.
		min, max int
	}{
		{"overloaded, Retry-After", 429, "3", `{"code":429,"message":"overloaded","source":"ingress"}`, 10 * time.Second, codes.Unavailable, "restate is overloaded and shed the call; retry later (HTTP 429): overloaded", 3000, 3000},
		{"routing error, no Retry-After", 503, "", `{"code":503,"message":"internal routing error","source":"ingress"}`, 10 * time.Second, codes.Unavailable, "restate cannot take the call now", 1000, 1000},
		{"proxy 503 with an HTTP date", 503, time.Now().Add(5 * time.Second).UTC().Format(http.TimeFormat), `<html>down</html>`, 20 * time.Second, codes.Unavailable, "restate cannot take the call now", 4000, 5000},
		{"pushback past the deadline", 429, "30", `{"code":429,"message":"overloaded","source":"ingress"}`, 5 * time.Second, codes.Unavailable, "overloaded", 0, 0},
		{"handler's own 503", 503, "3", `{"code":503,"message":"later","metadata":{"grpc-status":"14","grpc-message":"app says later"},"source":"invocation"}`, 10 * time.Second, codes.Unavailable, "app says later", 0, 0},
	}
	ingress := newFake(t, echoIngress)
	o := startOutbound(t, routesYAML, ingress, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ingress.setAnswer(func(w http.ResponseWriter, r *http.Request, body []byte) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.http)
				w.Write([]byte(tc.body))
			})
			ctx, cancel := context.WithTimeout(context.Background(), tc.deadline)
			defer cancel()
			var tr metadata.MD
			_, _, err := o.do(ctx, call{"Echo/Call", nil}, grpc.Trailer(&tr))
			if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Errorf("got %v %q, want %v with %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			got := tr.Get(MDRetryPushback)
			if tc.max == 0 {
				if len(got) != 0 {
					t.Errorf("%s = %q, want none", MDRetryPushback, got)
				}
				return
			}
			if ms, err := strconv.Atoi(strings.Join(got, ",")); err != nil || ms < tc.min || ms > tc.max {
				t.Errorf("%s = %q, want %d to %d", MDRetryPushback, got, tc.min, tc.max)
			}
		})
	}
}
