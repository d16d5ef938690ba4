package durable

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/descriptors"
	"github.com/restate-grpc/restate-grpc/internal/metrics"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
)

// Bounds of re-attaching after the connection to the ingress broke.
const (
	reattachTries   = 6
	reattachBackoff = 100 * time.Millisecond
)

// durable runs a unary call as a Restate invocation; m records it.
func (h *Handler) durable(stream grpc.ServerStream, method string, r *config.Route, m *metrics.Route) (err error) {
	call, send := m.Start(), r.Mode == config.ModeSend // the route's mode until the call's own is known
	ctx, span := h.startSpan(stream.Context(), method, r)
	defer func() { span.end(err); call.End(send, err) }()
	md, _ := metadata.FromIncomingContext(ctx)
	ov, err := parseOverrides(md)
	if err != nil {
		return err
	}
	var mdesc protoreflect.MethodDescriptor
	if h.desc != nil {
		// Unknown methods are not an error here: descriptors only sharpen the checks.
		if mdesc, _ = descriptors.Method(ctx, h.desc, method); mdesc != nil && (mdesc.IsStreamingClient() || mdesc.IsStreamingServer()) {
			return status.Errorf(codes.Unimplemented, "%s is a streaming method; route %q makes calls durable and Restate invocations are unary: exclude it from the route to pass it through", method, r.Match)
		}
	}
	req, err := recvUnary(stream, method, r)
	if err != nil {
		return err
	}
	inv, err := h.invocation(ctx, method, r, md, ov, req, mdesc)
	if err != nil {
		return err
	}
	span.invocation(ctx, &inv)
	send = inv.Send
	callCtx, cancel := context.WithTimeout(ctx, r.Timeout.Std())
	defer cancel()
	var res *restatehttp.Result
	switch {
	case ov.attach != "":
		res, err = h.attach(callCtx, method, r, inv, ov.attach)
	case !inv.Send && r.OnCallerGone == config.OnCallerGoneCancel:
		res, err = h.callCancellable(ctx, callCtx, inv)
	default:
		res, err = h.invoke(callCtx, inv)
	}
	if err != nil {
		if ctx.Err() == nil && callCtx.Err() != nil {
			err = h.timedOut(ctx, inv, r)
		}
		h.pushback(ctx, stream, err)
		return err
	}
	span.result(res)
	h.log.Debug("durable call", "method", method, "target", inv.Target, "send", inv.Send, "invocation", res.InvocationID, "status", res.Status)
	if err := stream.SetHeader(metadata.Pairs(MDInvocationID, res.InvocationID, MDStatus, res.Status)); err != nil {
		return err
	}
	return stream.SendMsg(&res.Body)
}

// nodeCounter is an Invoker that can tell how many of its Restate nodes answer now.
type nodeCounter interface {
	Nodes(ctx context.Context) (answering, all int)
}

// quorumProbe bounds the health probes made when a call meets its route's timeout.
const quorumProbe = 500 * time.Millisecond

// timedOut is the status of a call that met its route's timeout. Restate answers a call only
// when it has run, so a call still running and a cluster that has lost its quorum (its
// survivors take calls that hang, their health endpoints saying 200) look the same from the
// call; the nodes' health endpoints tell them apart: a dead node's does not answer.
func (h *Handler) timedOut(ctx context.Context, inv restatehttp.Invocation, r *config.Route) error {
	if nc, ok := h.ingr.(nodeCounter); ok {
		pctx, cancel := context.WithTimeout(ctx, quorumProbe)
		up, all := nc.Nodes(pctx)
		cancel()
		if all > 1 && 2*(all-up) >= all {
			return status.Errorf(codes.Unavailable, "%s: no answer within the route's timeout of %s, and only %d of the %d Restate nodes answer: the cluster has lost its quorum (with replication 2, one node of three may be down); an accepted invocation goes on once the nodes are back", inv.Target, r.Timeout.Std(), up, all)
		}
	}
	return status.Errorf(codes.DeadlineExceeded, "%s: no answer within the route's timeout of %s: the invocation is still running, or Restate cannot make progress (a cluster that lost its quorum); an accepted invocation goes on in Restate", inv.Target, r.Timeout.Std())
}

// recvUnary reads the one request message of a unary call.
func recvUnary(stream grpc.ServerStream, method string, r *config.Route) ([]byte, error) {
	var req []byte
	if err := stream.RecvMsg(&req); err != nil {
		if err == io.EOF {
			return nil, status.Errorf(codes.InvalidArgument, "%s: the call sent no request message", method)
		}
		return nil, err
	}
	var extra []byte
	if err := stream.RecvMsg(&extra); err != io.EOF {
		if err != nil {
			return nil, err
		}
		return nil, status.Errorf(codes.Unimplemented, "%s sent more than one request message; route %q makes calls durable and Restate invocations are unary: exclude streaming methods from the route", method, r.Match)
	}
	return req, nil
}

// invoke runs inv. When the connection to the ingress breaks and the call has an idempotency
// key, it re-attaches (Restate answers a repeated call with the same key from the invocation
// it already has) instead of failing the caller; without a key a repeat could run twice. The
// client already re-issues a keyed call on the other nodes of a cluster at once; this waits
// and tries again when none answered (a single node restarting, a cluster failing over), or
// when Restate could not route the call (its 503, which it says a keyed call may retry).
func (h *Handler) invoke(ctx context.Context, inv restatehttp.Invocation) (*restatehttp.Result, error) {
	backoff := reattachBackoff
	for try := 1; ; try++ {
		res, err := h.ingr.Invoke(ctx, inv)
		if err != nil && restatehttp.IsTransport(err) {
			h.metrics.IngressError()
		}
		if err == nil || inv.IdempotencyKey == "" || !(restatehttp.IsTransport(err) || unroutable(err)) || try == reattachTries {
			return res, err
		}
		h.metrics.Reattach()
		h.log.Warn("no restate node answered; re-attaching", "target", inv.Target, "idempotency-key", inv.IdempotencyKey, "try", try, "error", err)
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// unroutable tells Restate's own 503: it could not route the call now (a partition without a
// leader while a cluster fails over), and says a call with an idempotency key may be retried.
func unroutable(err error) bool {
	var ce *restatehttp.CallError
	return errors.As(err, &ce) && ce.HTTPStatus == http.StatusServiceUnavailable && ce.RetryAfter > 0
}

// callCancellable runs a call whose invocation is cancelled when its caller goes away. The id
// must be known before the result: computed from the idempotency key, or else the call is made
// as a send and then attached to.
func (h *Handler) callCancellable(callerCtx, ctx context.Context, inv restatehttp.Invocation) (*restatehttp.Result, error) {
	var ref restatehttp.Ref
	if inv.IdempotencyKey != "" {
		ref = restatehttp.Ref{Idempotent: &inv.Target, Key: inv.IdempotencyKey}
		id, err := h.ingr.Lookup(ctx, ref)
		if err != nil {
			return nil, err
		}
		done := h.cancelWhenGone(callerCtx, id)
		defer done()
		return h.invoke(ctx, inv)
	}
	send := inv
	send.Send = true
	accepted, err := h.invoke(ctx, send)
	if err != nil {
		return nil, err
	}
	done := h.cancelWhenGone(callerCtx, accepted.InvocationID)
	defer done()
	res, err := h.ingr.Attach(ctx, restatehttp.Ref{ID: accepted.InvocationID})
	if res != nil && res.InvocationID == "" {
		res.InvocationID = accepted.InvocationID
	}
	return res, err
}

// cancelWhenGone cancels invocation id if the caller leaves (cancel or deadline) before the
// returned func is called.
func (h *Handler) cancelWhenGone(callerCtx context.Context, id string) (done func()) {
	finished := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-finished:
		case <-callerCtx.Done():
			ctx, cancel := context.WithTimeout(context.WithoutCancel(callerCtx), 5*time.Second)
			defer cancel()
			err := h.admin.Cancel(ctx, id)
			h.log.Info("caller gone; invocation cancelled (onCallerGone: cancel)", "invocation", id, "error", err)
		}
	}()
	return func() { close(finished); <-exited }
}

// attach answers a call from an existing invocation: by id, or the invocation the call itself
// names by its idempotency key or workflow id.
func (h *Handler) attach(ctx context.Context, method string, r *config.Route, inv restatehttp.Invocation, how string) (*restatehttp.Result, error) {
	var ref restatehttp.Ref
	switch how {
	case AttachIdempotencyKey:
		if inv.IdempotencyKey == "" {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %s: %s needs the call's idempotency key (%s)", method, MDAttach, how, r.IdempotencyKey)
		}
		ref = restatehttp.Ref{Idempotent: &inv.Target, Key: inv.IdempotencyKey}
	case AttachWorkflow:
		if r.Target != config.KindWorkflow {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %s: workflow needs a workflow route; route %q targets a %s", method, MDAttach, r.Match, r.Target)
		}
		ref = restatehttp.Ref{Workflow: &inv.Target}
	default:
		if err := h.checkOwner(ctx, method, r, inv.Target, how); err != nil {
			return nil, err
		}
		ref = restatehttp.Ref{ID: how}
	}
	res, err := h.ingr.Attach(ctx, ref)
	if err != nil {
		return nil, err
	}
	if res.InvocationID == "" {
		res.InvocationID, _ = h.ingr.Lookup(ctx, ref)
	}
	return res, nil
}

// checkOwner makes sure invocation id is one of the called method's target (service, handler,
// and key for objects and workflows): its result is read as this method's response type, and
// the invocation of another service would answer with bytes of another type. Only the admin
// API knows an invocation's target.
func (h *Handler) checkOwner(ctx context.Context, method string, r *config.Route, want restatehttp.Target, id string) error {
	if h.admin == nil {
		return status.Errorf(codes.FailedPrecondition, "%s: %s: %s: attaching by invocation id needs outbound.admin (Restate's admin API), to check that the invocation is one of %s; set it, or attach by %s or %s", method, MDAttach, id, want, AttachIdempotencyKey, AttachWorkflow)
	}
	got, found, err := h.admin.InvocationTarget(ctx, id)
	if err != nil {
		st := status.Convert(err)
		return status.Errorf(st.Code(), "%s: %s: checking whose invocation %s is: %s", method, MDAttach, id, st.Message())
	}
	if !found {
		return status.Errorf(codes.NotFound, "%s: %s: restate has no invocation %s", method, MDAttach, id)
	}
	if got.Service != want.Service || got.Handler != want.Handler || got.Keyed != want.Keyed || got.Key != want.Key {
		return status.Errorf(codes.InvalidArgument, "%s: %s: invocation %s is one of %s, not of %s (route %q): its result is not this method's response; attach with the method it belongs to, or use the Invocations API", method, MDAttach, id, got, want, r.Match)
	}
	return nil
}

// MDRetryPushback is the trailer (gRFC A6) by which a caller's gRPC retry policy learns how
// long to wait before it tries again.
const MDRetryPushback = "grpc-retry-pushback-ms"

// pushback sets grpc-retry-pushback-ms when Restate shed the call and asked for a wait that
// still fits in the caller's deadline; a wait past it would only waste the retry.
func (h *Handler) pushback(ctx context.Context, stream grpc.ServerStream, err error) {
	var ce *restatehttp.CallError
	if !errors.As(err, &ce) || ce.RetryAfter <= 0 {
		return
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= ce.RetryAfter {
		return
	}
	stream.SetTrailer(metadata.Pairs(MDRetryPushback, strconv.FormatInt(ce.RetryAfter.Milliseconds(), 10)))
}
