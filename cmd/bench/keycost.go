package main

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
)

// What a sidecar-made idempotency key costs (issue 13): path (k) is (c), Restate alone, with a
// unique idempotency-key header on every call, as the outbound sidecar's autoIdempotencyKey
// sends. Restate then stores each call's result for the service's idempotency retention, and the
// ratio k/c is that price; it chooses the route default.

// keyedCaller posts body to base+path with a new idempotency key per call: a run-unique prefix
// and a counter, never derived from the payload (the same payload twice is two calls).
func keyedCaller(hc *http.Client, base, path string, body []byte, run string) caller {
	var n atomic.Uint64
	return func(ctx context.Context) error {
		key := fmt.Sprintf("bench-%s-%d", run, n.Add(1))
		return postHeader(ctx, hc, base+path, body, http.Header{"Idempotency-Key": {key}})
	}
}
