package restatehttp

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

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
// itself map as DESIGN.md's table says (README "Errors" lists every status).
func StatusFromResponse(httpCode int, body []byte) *status.Status {
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Message == "" && eb.Code == 0 {
		// Not Restate's JSON: an HTTP-level refusal (431 from its HTTP server has no body) or a
		// proxy in front of Restate.
		text := http.StatusText(httpCode)
		if text == "" && httpCode == 470 {
			text = "Not Ready"
		}
		msg := fmt.Sprintf("restate ingress answered HTTP %d %s", httpCode, text)
		if len(body) > 0 {
			msg += ": " + truncate(body)
		}
		if httpCode == http.StatusRequestHeaderFieldsTooLarge {
			msg += "; send less metadata"
		}
		if shed := shedding(httpCode); shed != "" {
			msg = shed + ": " + msg
		}
		return status.New(httpCodeToGRPC(httpCode, ""), msg)
	}
	if st, ok := fromMetadata(eb.Metadata); ok {
		return st
	}
	msg := eb.Message
	if eb.Source != "invocation" {
		// Restate's own 500s carry its stack trace: not for callers.
		if i := strings.Index(msg, "\n\nStack backtrace:"); i >= 0 {
			msg = msg[:i]
		}
	}
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
		return status.New(httpCodeToGRPC(code, eb.Source), msg)
	}
	if code == http.StatusNotFound && strings.Contains(msg, "not found") &&
		(strings.HasPrefix(msg, "service ") || strings.HasPrefix(msg, "the service ")) {
		return status.New(codes.Unimplemented, "restate: "+msg)
	}
	if shed := shedding(code); shed != "" {
		return status.New(codes.Unavailable, shed+" (HTTP "+strconv.Itoa(code)+"): "+msg)
	}
	return status.New(httpCodeToGRPC(code, eb.Source), "restate: "+msg)
}

// shedding says what a 429 or 503 of Restate itself (or of a proxy in front of it) means to a
// caller: the call was not taken, and a later one may be.
func shedding(code int) string {
	switch code {
	case http.StatusTooManyRequests:
		return "restate is overloaded and shed the call; retry later"
	case http.StatusServiceUnavailable:
		return "restate cannot take the call now (a node or partition is unavailable); retry later"
	}
	return ""
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

// httpCodeToGRPC maps an HTTP status to a gRPC code. source is Restate's error source:
// "invocation" when the code is a handler's terminal error code (the inverse of the inbound
// side's mapping, for native Restate handlers), else Restate itself or an HTTP server or proxy
// in front of it, whose 429 and 5xx mean "try again" and whose size refusals mean "smaller".
func httpCodeToGRPC(code int, source string) codes.Code {
	handler := source == "invocation"
	switch code {
	case http.StatusBadRequest, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound, http.StatusGone:
		return codes.NotFound
	case http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return codes.Unimplemented
	case http.StatusRequestTimeout:
		if handler {
			return codes.DeadlineExceeded
		}
		// The server gave up waiting for the request: it was not run, and may be sent again.
		return codes.Unavailable
	case http.StatusConflict:
		return codes.Aborted
	case http.StatusPreconditionFailed, 470: // 470: the invocation exists but has not completed yet
		return codes.FailedPrecondition
	case http.StatusRequestEntityTooLarge, http.StatusRequestURITooLong, http.StatusRequestHeaderFieldsTooLarge:
		return codes.ResourceExhausted
	case http.StatusTooManyRequests:
		if handler {
			return codes.ResourceExhausted
		}
		return codes.Unavailable // Restate is overloaded: try again
	case 499: // a client closed the request; the inbound side's code for CANCELLED
		return codes.Canceled
	case http.StatusInternalServerError:
		if handler {
			return codes.Unknown // a terminal error without a code, as a plain error in grpc-go
		}
		return codes.Internal
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return codes.Unavailable
	case http.StatusGatewayTimeout:
		if handler {
			return codes.DeadlineExceeded
		}
		return codes.Unavailable
	}
	return codes.Unknown
}

// serviceUnknown tells the ingress's answer that it has no such service or handler: from a
// node of a cluster that has not loaded the schema yet (a restarted one, for a moment), while
// the others know it.
func serviceUnknown(resp *http.Response, body []byte) bool {
	if resp.StatusCode != http.StatusNotFound {
		return false
	}
	var eb errorBody
	if json.Unmarshal(body, &eb) != nil || eb.Source == "invocation" {
		return false
	}
	return strings.HasSuffix(strings.SplitN(eb.Message, ",", 2)[0], "not found") && strings.HasPrefix(eb.Message, "service ") ||
		strings.HasPrefix(eb.Message, "the service ") && strings.Contains(eb.Message, "was not found")
}

// DefaultPushback is how long a caller is asked to wait (grpc-retry-pushback-ms) when Restate
// sheds a call (429, 503) without saying how long.
const DefaultPushback = time.Second

// maxPushback bounds what a Retry-After header may ask of callers.
const maxPushback = time.Minute

// retryAfter is the wait before a retry that Restate's answer asks for: its Retry-After
// (seconds or an HTTP date), else DefaultPushback, for 429 and 503 of Restate itself (not
// of a handler, whose status passes through as it is); 0 for any other answer.
func retryAfter(resp *http.Response, body []byte) time.Duration {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return 0
	}
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil && eb.Source == "invocation" {
		return 0
	}
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return DefaultPushback
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return min(time.Duration(s)*time.Second, maxPushback)
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(time.Until(t), 0), maxPushback)
	}
	return DefaultPushback
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}
