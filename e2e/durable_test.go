package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

const (
	echoCall    = "/rgtest.v1.Echo/Call"
	counterAdd  = "/rgtest.v1.Counter/Add"
	counterGet  = "/rgtest.v1.Counter/Get"
	flowRun     = "/rgtest.v1.Flow/Run"
	flowStatus  = "/rgtest.v1.Flow/Status"
	stateHeader = "restate-status"
	idHeader    = "restate-invocation-id"
)

func header(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

// TestModesAndTargets runs call and send against a service, an object and a workflow, and
// checks what the caller got and what the callee ran.
func TestModesAndTargets(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		send     bool
		key      string // counter-id metadata (object) or the request's key field (workflow)
		wantKey  string // key the callee saw
		callee   string
		fieldKey bool
	}{
		{name: "service call", method: echoCall, callee: "Echo/Call"},
		{name: "service send", method: echoCall, send: true, callee: "Echo/Call"},
		{name: "object call", method: counterAdd, key: "obj-call", callee: "Counter/Add"},
		{name: "object send", method: counterAdd, send: true, key: "obj-send", callee: "Counter/Add"},
		{name: "object shared call", method: counterGet, key: "obj-call", callee: "Counter/Get"},
		{name: "workflow call", method: flowRun, key: "wf-call", fieldKey: true, callee: "Flow/Run"},
		{name: "workflow send", method: flowRun, send: true, key: "wf-send", fieldKey: true, callee: "Flow/Run"},
		{name: "workflow shared call", method: flowStatus, key: "wf-call", fieldKey: true, callee: "Flow/Status"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			text := uniq(t, "text")
			key := ""
			if tc.key != "" {
				key = uniq(t, tc.key)
				if tc.name == "object shared call" || tc.name == "workflow shared call" {
					key = tc.key // the key the earlier call used is not needed: shared handlers run anyway
				}
			}
			req := &testpb.Req{Text: text}
			var md []string
			if tc.fieldKey {
				req.Key = key
			} else if key != "" {
				md = append(md, "counter-id", key)
			}
			if tc.send {
				md = append(md, "restate-mode", "send")
			}
			resp, hdr, err := invoke(ctx, env.conn, tc.method, req, md...)
			if err != nil {
				t.Fatalf("%s: %v", tc.method, err)
			}
			id := header(hdr, idHeader)
			if id == "" {
				t.Errorf("header %s missing; header %v", idHeader, hdr)
			}
			if tc.send {
				if got, want := header(hdr, stateHeader), "Accepted"; got != want {
					t.Errorf("%s = %q, want %q", stateHeader, got, want)
				}
				if resp.GetText() != "" || resp.GetSeq() != 0 {
					t.Errorf("send answered %v, want an empty message", resp)
				}
				eventually(t, 10*time.Second, "the sent call ran", func() bool { return len(env.app.CallsWithText(text)) == 1 })
			} else {
				if got, want := header(hdr, stateHeader), "Completed"; got != want {
					t.Errorf("%s = %q, want %q", stateHeader, got, want)
				}
				if got, want := resp.GetText(), text; got != want {
					t.Errorf("response text = %q, want %q", got, want)
				}
				if got := resp.GetInvocationId(); got != id {
					t.Errorf("callee saw invocation %q, header says %q", got, id)
				}
			}
			calls := env.app.CallsWithText(text)
			if len(calls) != 1 {
				t.Fatalf("callee ran %d times, want 1", len(calls))
			}
			if got := calls[0].Method; got != tc.callee {
				t.Errorf("callee method = %q, want %q", got, tc.callee)
			}
			if got := calls[0].Key; got != key {
				t.Errorf("callee key = %q, want %q", got, key)
			}
			if got := calls[0].InvocationID; got != id {
				t.Errorf("callee invocation id = %q, caller header %q", got, id)
			}
		})
	}
}

func TestWorkflowRunsOncePerID(t *testing.T) {
	ctx := testCtx(t)
	id := uniq(t, "wf")
	if _, _, err := invoke(ctx, env.conn, flowRun, &testpb.Req{Key: id, Text: "first"}); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	_, _, err := invoke(ctx, env.conn, flowRun, &testpb.Req{Key: id, Text: "second"})
	if got, want := status.Code(err), codes.AlreadyExists; got != want {
		t.Fatalf("second Run: code %v (%v), want %v", got, err, want)
	}
	// A send of the run handler for a started id is accepted as the same invocation.
	_, hdr, err := invoke(ctx, env.conn, flowRun, &testpb.Req{Key: id, Text: "third"}, "restate-mode", "send")
	if err != nil {
		t.Fatalf("Run send: %v", err)
	}
	if got, want := header(hdr, stateHeader), "PreviouslyAccepted"; got != want {
		t.Errorf("Run send for a started id: %s = %q, want %q", stateHeader, got, want)
	}
	// Shared handlers run as often as they are called.
	for i := range 2 {
		if _, _, err := invoke(ctx, env.conn, flowStatus, &testpb.Req{Key: id, Text: fmt.Sprint("status", i)}); err != nil {
			t.Fatalf("Status: %v", err)
		}
	}
	runs := 0
	for _, c := range env.app.Calls("Flow/Run") {
		if c.Key == id {
			runs++
		}
	}
	if runs != 1 {
		t.Errorf("Run executed %d times for one id, want 1", runs)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Run("call", func(t *testing.T) {
		ctx := testCtx(t)
		key, text := uniq(t, "idem"), uniq(t, "text")
		var resps [2]*testpb.Resp
		var hdrs [2]metadata.MD
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				var err error
				resps[i], hdrs[i], err = invoke(ctx, env.conn, echoCall, &testpb.Req{Text: text, SleepMs: 300}, "idempotency-key", key)
				if err != nil {
					t.Errorf("call %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		if got := len(env.app.CallsWithText(text)); got != 1 {
			t.Errorf("callee ran %d times for one idempotency key, want 1", got)
		}
		if resps[0].GetSeq() != resps[1].GetSeq() || resps[0].GetInvocationId() != resps[1].GetInvocationId() {
			t.Errorf("answers differ: %v and %v", resps[0], resps[1])
		}
		if a, b := header(hdrs[0], idHeader), header(hdrs[1], idHeader); a != b || a == "" {
			t.Errorf("invocation ids %q and %q, want the same", a, b)
		}
	})
	t.Run("send", func(t *testing.T) {
		ctx := testCtx(t)
		key, text := uniq(t, "idem"), uniq(t, "text")
		var states []string
		var id string
		for range 2 {
			_, hdr, err := invoke(ctx, env.conn, echoCall, &testpb.Req{Text: text}, "idempotency-key", key, "restate-mode", "send")
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			states = append(states, header(hdr, stateHeader))
			id = header(hdr, idHeader)
		}
		if states[0] != "Accepted" || states[1] != "PreviouslyAccepted" {
			t.Errorf("states %v, want [Accepted PreviouslyAccepted]", states)
		}
		// Once the invocation is completed the callee runs no more.
		eventually(t, 10*time.Second, "the send completed", func() bool {
			var rows []struct{ Status string }
			env.adminQuery(t, fmt.Sprintf("SELECT status FROM sys_invocation WHERE id = '%s'", id), &rows)
			return len(rows) == 1 && rows[0].Status == "completed"
		})
		if got := len(env.app.CallsWithText(text)); got != 1 {
			t.Errorf("callee ran %d times, want 1", got)
		}
	})
}

// TestObjectSerialInArrivalOrder sends calls to one key, each slow, and checks the callee ran
// them one at a time, in the order they were sent.
func TestObjectSerialInArrivalOrder(t *testing.T) {
	ctx := testCtx(t)
	key := uniq(t, "serial")
	const n = 12
	prefix := uniq(t, "msg")
	for i := range n {
		_, _, err := invoke(ctx, env.conn, counterAdd, &testpb.Req{Text: fmt.Sprintf("%s-%02d", prefix, i), SleepMs: 30},
			"counter-id", key, "restate-mode", "send")
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	// And concurrent calls on the same key, which must not overlap either.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			if _, _, err := invoke(ctx, env.conn, counterAdd, &testpb.Req{Text: fmt.Sprintf("%s-c%d", prefix, i), SleepMs: 30}, "counter-id", key); err != nil {
				t.Errorf("call: %v", err)
			}
		})
	}
	wg.Wait()
	var order []string
	eventually(t, 20*time.Second, "all sends ran", func() bool {
		order = order[:0]
		for _, c := range env.app.Calls("Counter/Add") {
			if c.Key == key {
				order = append(order, c.Text)
			}
		}
		return len(order) == n+4
	})
	for i := range n {
		if want := fmt.Sprintf("%s-%02d", prefix, i); order[i] != want {
			t.Fatalf("execution %d ran %q, want %q (order %v)", i, order[i], want, order)
		}
	}
	if got := env.app.Overlaps(); got != 0 {
		t.Errorf("%d calls of one key overlapped, want 0", got)
	}
	resp, _, err := invoke(ctx, env.conn, counterGet, &testpb.Req{}, "counter-id", key)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.GetSeq(), int64(n+4); got != want {
		t.Errorf("counter = %d, want %d", got, want)
	}
}

func TestDelayedSend(t *testing.T) {
	tests := []struct {
		name  string
		ctx   func() context.Context
		md    []string
		delay time.Duration
		conn  func() *grpc.ClientConn
	}{
		{name: "restate-delay metadata", md: []string{"restate-mode", "send", "restate-delay", "1500ms"}, delay: 1500 * time.Millisecond, conn: func() *grpc.ClientConn { return env.conn }},
		{name: "ISO 8601 restate-delay", md: []string{"restate-mode", "send", "restate-delay", "PT1S"}, delay: time.Second, conn: func() *grpc.ClientConn { return env.conn }},
		{name: "route default delay", delay: time.Second, conn: func() *grpc.ClientConn { return env.connStrict }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			text := uniq(t, "delayed")
			sent := time.Now()
			_, hdr, err := invoke(ctx, tc.conn(), echoCall, &testpb.Req{Text: text}, tc.md...)
			if err != nil {
				t.Fatal(err)
			}
			if answered := time.Since(sent); answered > tc.delay*3/4 {
				t.Errorf("the send answered after %s; it must not wait for the delay", answered)
			}
			if got := header(hdr, stateHeader); got != "Accepted" {
				t.Errorf("%s = %q, want Accepted", stateHeader, got)
			}
			eventually(t, 15*time.Second, "the delayed send ran", func() bool { return len(env.app.CallsWithText(text)) == 1 })
			ran := env.app.CallsWithText(text)[0].Start
			if early := ran.Sub(sent); early < tc.delay {
				t.Errorf("ran %s after the send, want no earlier than %s", early, tc.delay)
			}
		})
	}
}

func TestKeyFromProtoField(t *testing.T) {
	ctx := testCtx(t)
	key := uniq(t, "nested")
	// The strict sidecar keys Counter by the nested.id field, with descriptors from a file.
	resp, _, err := invoke(ctx, env.connStrict, counterAdd, &testpb.Req{Text: "a", Nested: &testpb.Nested{Id: key}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetKey(); got != key {
		t.Errorf("callee key = %q, want %q (from field nested.id)", got, key)
	}
	// The main sidecar keys Flow by the key field, with descriptors from the app's reflection.
	id := uniq(t, "wf")
	resp, _, err = invoke(ctx, env.conn, flowRun, &testpb.Req{Key: id})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetKey(); got != id {
		t.Errorf("workflow id = %q, want %q (from field key)", got, id)
	}
	// restate-key overrides the field.
	resp, _, err = invoke(ctx, env.connStrict, counterAdd, &testpb.Req{Nested: &testpb.Nested{Id: key}}, "restate-key", key+"-override")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.GetKey(), key+"-override"; got != want {
		t.Errorf("callee key = %q, want %q (restate-key)", got, want)
	}
}

func TestKeysAreEscaped(t *testing.T) {
	ctx := testCtx(t)
	for _, key := range []string{"a/b c", "50%?x=1#frag", "✓ ünï/x"} {
		// gRPC metadata is ASCII; the strict sidecar takes the key from a field.
		resp, _, err := invoke(ctx, env.conn, counterAdd, &testpb.Req{}, "counter-id", key)
		if key[0] > 0x7f || strings.ContainsFunc(key, func(r rune) bool { return r > 0x7f }) {
			resp, _, err = invoke(ctx, env.connStrict, counterAdd, &testpb.Req{Nested: &testpb.Nested{Id: key}})
		}
		if err != nil {
			t.Fatalf("key %q: %v", key, err)
		}
		if got := resp.GetKey(); got != key {
			t.Errorf("callee key = %q, want %q", got, key)
		}
	}
}
