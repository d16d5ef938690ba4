package metrics

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/config"
)

// numCodes is how many gRPC codes are labelled by name; any other is labelled UNKNOWN.
const numCodes = int(codes.Unauthenticated) + 1

// codeIndex is c's index among the bound label sets.
func codeIndex(c codes.Code) int {
	if int(c) >= numCodes {
		return int(codes.Unknown)
	}
	return int(c)
}

// statusName is gRFC A66's grpc.status value of code i: its canonical name, as in
// google.golang.org/grpc/codes' documentation (OK, CANCELLED, DEADLINE_EXCEEDED, ...).
var statusName = [numCodes]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
}

// Route records the durable calls of one configured route, its label sets bound up front.
// A nil *Route records nothing.
type Route struct {
	r        *Registry
	inFlight []metric.AddOption
	sends    []metric.AddOption
	// ends holds the sets of a call's end by mode (0 call, 1 send) and code.
	ends [2][numCodes]endSets
}

type endSets struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

// Routes binds the label sets of each route, in order; without a Registry every one is nil,
// and records nothing.
func (r *Registry) Routes(routes []config.Route) []*Route {
	out := make([]*Route, len(routes))
	if r == nil {
		return out
	}
	for i, rt := range routes {
		route, kind := LabelRoute.String(rt.Match), LabelTargetKind.String(rt.Target)
		m := &Route{r: r, inFlight: addSet(route), sends: addSet(route)}
		for mode, name := range [2]string{config.ModeCall, config.ModeSend} {
			for c := range numCodes {
				kv := []attribute.KeyValue{route, LabelMode.String(name), kind, LabelStatus.String(statusName[c])}
				m.ends[mode][c] = endSets{add: addSet(kv...), rec: recordSet(kv...)}
			}
		}
		out[i] = m
	}
	return out
}

// Call is a durable call in flight.
type Call struct {
	rt    *Route
	start time.Time
}

// Start counts a durable call of the route in flight until its Call ends.
func (rt *Route) Start() Call {
	if rt == nil {
		return Call{}
	}
	rt.r.inFlight.Add(context.Background(), 1, rt.inFlight...)
	return Call{rt: rt, start: time.Now()}
}

// End records the call's answer: send is its effective mode, err its status (nil for OK).
func (c Call) End(send bool, err error) {
	if c.rt == nil {
		return
	}
	ctx := context.Background()
	r := c.rt.r
	r.inFlight.Add(ctx, -1, c.rt.inFlight...)
	mode := 0
	if send {
		mode = 1
	}
	code := codes.OK
	if err != nil {
		code = status.Code(err)
	}
	s := &c.rt.ends[mode][codeIndex(code)]
	r.durableCalls.Add(ctx, 1, s.add...)
	r.durableDuration.Record(ctx, time.Since(c.start).Seconds(), s.rec...)
	if send && code == codes.OK {
		r.sendsAccepted.Add(ctx, 1, c.rt.sends...)
	}
}
