package restatehttp

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Error metadata keys by which the inbound side carries a callee's gRPC status through Restate.
const (
	MetaStatus  = "grpc-status"
	MetaMessage = "grpc-message"
	MetaDetails = "grpc-status-details-bin" // base64 of a google.rpc.Status
)

// errorBody is Restate's error response: {"code":..,"message":..,"source":..,"metadata":{..}}.
type errorBody struct {
	Code     int               `json:"code"`
	Message  string            `json:"message"`
	Source   string            `json:"source"`
	Metadata map[string]string `json:"metadata"`
}

// StatusMetadata encodes st as terminal-error metadata; StatusFromResponse decodes it.
func StatusMetadata(st *status.Status) map[string]string {
	md := map[string]string{
		MetaStatus:  strconv.Itoa(int(st.Code())),
		MetaMessage: st.Message(),
	}
	if len(st.Proto().GetDetails()) > 0 {
		if b, err := proto.Marshal(st.Proto()); err == nil {
			md[MetaDetails] = base64.StdEncoding.EncodeToString(b)
		}
	}
	return md
}

// StatusFromResponse maps a Restate error response to the status the gRPC caller gets. A
// callee's own status, carried in the error metadata, comes back unchanged; errors of Restate
// itself map as DESIGN.md's table says.
func StatusFromResponse(httpCode int, body []byte) *status.Status {
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Message == "" && eb.Code == 0 {
		return status.Newf(httpCodeToGRPC(httpCode, ""), "restate ingress answered HTTP %d: %s", httpCode, truncate(body))
	}
	if st, ok := fromMetadata(eb.Metadata); ok {
		return st
	}
	msg := eb.Message
	code := eb.Code
	if code == 0 {
		code = httpCode
	}
	if code == http.StatusConflict && strings.Contains(msg, "already invoked") {
		return status.New(codes.AlreadyExists, "restate: "+msg)
	}
	if eb.Source == "invocation" {
		switch {
		case code == http.StatusConflict && strings.EqualFold(msg, "cancelled"):
			return status.New(codes.Canceled, "restate: the invocation was cancelled")
		case code == http.StatusConflict && strings.EqualFold(msg, "killed"):
			return status.New(codes.Aborted, "restate: the invocation was killed")
		case code == http.StatusNotFound && msg == "not found":
			return status.New(codes.NotFound, "restate: invocation not found")
		case code > 0 && code <= 16:
			// A native Restate handler that uses gRPC codes as error codes.
			return status.New(codes.Code(code), msg)
		}
		return status.New(httpCodeToGRPC(code, msg), msg)
	}
	if code == http.StatusNotFound && strings.Contains(msg, "not found") &&
		(strings.HasPrefix(msg, "service ") || strings.HasPrefix(msg, "the service ")) {
		return status.New(codes.Unimplemented, "restate: "+msg)
	}
	return status.New(httpCodeToGRPC(code, msg), "restate: "+msg)
}

func fromMetadata(md map[string]string) (*status.Status, bool) {
	cs, ok := md[MetaStatus]
	if !ok {
		return nil, false
	}
	c, err := strconv.Atoi(cs)
	if err != nil || c <= 0 || c > 16 {
		return nil, false // an error is never OK
	}
	if d := md[MetaDetails]; d != "" {
		if b, err := base64.StdEncoding.DecodeString(d); err == nil {
			var p spb.Status
			if proto.Unmarshal(b, &p) == nil && p.Code == int32(c) {
				return status.FromProto(&p), true
			}
		}
	}
	return status.New(codes.Code(c), md[MetaMessage]), true
}

func httpCodeToGRPC(code int, msg string) codes.Code {
	switch code {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return codes.Unimplemented
	case http.StatusConflict:
		return codes.Aborted
	case http.StatusRequestEntityTooLarge:
		return codes.ResourceExhausted
	case http.StatusTooManyRequests, http.StatusServiceUnavailable, http.StatusBadGateway:
		return codes.Unavailable
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return codes.DeadlineExceeded
	case 470: // Restate: the invocation exists but has not completed yet
		return codes.FailedPrecondition
	}
	return codes.Unknown
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}
