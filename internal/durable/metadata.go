package durable

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/interceptors"
	"github.com/restate-grpc/restate-grpc/internal/config"
)

// Per-call overrides a caller may send as metadata (the reserved restate- prefix).
const (
	MDMode  = "restate-mode"
	MDDelay = "restate-delay"
	MDKey   = "restate-key"
	// MDAttach answers the call from an existing invocation: an invocation id, or one of
	// AttachIdempotencyKey and AttachWorkflow for the invocation the call itself names.
	MDAttach = "restate-attach"

	AttachIdempotencyKey = "idempotency-key"
	AttachWorkflow       = "workflow"

	// Set on every durable answer.
	MDInvocationID = "restate-invocation-id"
	MDStatus       = "restate-status"
)

// overrides are the restate-* metadata of one call.
type overrides struct {
	mode             string
	delay            time.Duration
	key              string
	attach           string // an invocation id, AttachIdempotencyKey or AttachWorkflow
	hasKey, hasDelay bool
}

// parseOverrides reads the restate-* metadata. An unknown restate- name is an error: a typo
// such as restate-delya must not silently run the call now.
func parseOverrides(md metadata.MD) (overrides, error) {
	var o overrides
	for k, vs := range md {
		if !strings.HasPrefix(k, "restate-") || len(vs) == 0 {
			continue
		}
		v := vs[len(vs)-1]
		switch k {
		case MDMode:
			if v != config.ModeCall && v != config.ModeSend {
				return o, status.Errorf(codes.InvalidArgument, "%s: %q is not call or send", MDMode, v)
			}
			o.mode = v
		case MDDelay:
			d, err := config.ParseDuration(v)
			if err != nil {
				return o, status.Errorf(codes.InvalidArgument, "%s: %v", MDDelay, err)
			}
			o.delay, o.hasDelay = d, true
		case MDKey:
			if v == "" {
				// An empty key would name the object "" (or the workflow ""), shared by every
				// caller that forgot to set one: refused like a missing key.
				return o, status.Errorf(codes.InvalidArgument, "%s is empty: an object key or workflow id must not be empty", MDKey)
			}
			o.key, o.hasKey = v, true
		case MDAttach:
			if v != AttachIdempotencyKey && v != AttachWorkflow && !strings.HasPrefix(v, "inv_") {
				return o, status.Errorf(codes.InvalidArgument, "%s: %q is not an invocation id (inv_...), %s or %s", MDAttach, v, AttachIdempotencyKey, AttachWorkflow)
			}
			o.attach = v
		case MDInvocationID, MDStatus:
			// Answers of an earlier hop that an app copied into its own call: not overrides.
		default:
			return o, status.Errorf(codes.InvalidArgument, "unknown metadata %q: the restate- prefix is reserved (known: %s, %s, %s, %s)", k, MDMode, MDDelay, MDKey, MDAttach)
		}
	}
	return o, nil
}

// hopByHop are transport headers of the gRPC leg that mean nothing on the ingress leg.
var hopByHop = []string{"content-type", "te", "user-agent", "connection", "keep-alive",
	"transfer-encoding", "upgrade", "host", "content-length"}

// ingressHeader selects the metadata forwarded to the ingress: the caller's own headers,
// without transport, gRPC-internal, restate- and idempotency headers, and without credentials
// unless allowed, which then travel renamed (interceptors.CarriedPrefix). A caller's own x-restate-
// headers are dropped, so none can pass for a credential. Binary (-bin) values travel
// base64-encoded, as on the gRPC wire.
func ingressHeader(md metadata.MD, r *config.Route) http.Header {
	h := make(http.Header, len(md))
	for k, vs := range md {
		switch {
		case strings.HasPrefix(k, ":"), strings.HasPrefix(k, "grpc-"), strings.HasPrefix(k, "restate-"),
			strings.HasPrefix(k, "x-restate-"), slices.Contains(hopByHop, k),
			k == r.IdempotencyKey.Metadata, k == "idempotency-key":
			continue
		case slices.Contains(interceptors.Credentials, k) && !slices.Contains(r.AllowMetadata, k):
			continue
		}
		name := k
		if slices.Contains(interceptors.Credentials, k) {
			name = interceptors.CarriedPrefix + k
		}
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.RawStdEncoding.EncodeToString([]byte(v))
			}
			h[name] = append(h[name], v)
		}
	}
	return h
}

func last(md metadata.MD, k string) (string, bool) {
	vs := md.Get(k)
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// missing is the error for a value a route needs but the call lacks.
func missing(what string, src config.Source, route string) error {
	how := fmt.Sprintf("set metadata %q", src.Metadata)
	if src.Field != "" {
		how = fmt.Sprintf("set field %q of the request", src.Field)
	}
	if what == "key" {
		how += " or metadata " + MDKey
	}
	return status.Errorf(codes.InvalidArgument, "route %q needs an object key or workflow id: %s", route, how)
}
