package restatehttp

import (
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestStatusFromResponse pins DESIGN.md's error table, with bodies as Restate 1.7 sends them.
func TestStatusFromResponse(t *testing.T) {
	tests := []struct {
		name string
		http int
		body string
		code codes.Code
		msg  string
	}{
		{"unknown service", 404, `{"code":404,"message":"service 'greeter.Nope' not found, make sure to register the service before calling it.","source":"ingress"}`, codes.Unimplemented, "restate: service 'greeter.Nope' not found, make sure to register the service before calling it."},
		{"unknown handler", 404, `{"code":404,"message":"the service 'greeter.Greeter' exists, but the handler 'Nope' was not found, check that the handler exists in the latest registered service version.","source":"ingress"}`, codes.Unimplemented, ""},
		{"bad request", 400, `{"code":400,"message":"bad delay query parameter","source":"ingress"}`, codes.InvalidArgument, "restate: bad delay query parameter"},
		{"unauthenticated", 401, `{"code":401,"message":"unauthorized","source":"ingress"}`, codes.Unauthenticated, ""},
		{"forbidden", 403, `{"code":403,"message":"forbidden","source":"ingress"}`, codes.PermissionDenied, ""},
		{"invocation not found", 404, `{"code":404,"message":"not found","source":"invocation"}`, codes.NotFound, "restate: invocation not found"},
		{"cancelled", 409, `{"code":409,"message":"Cancelled","source":"invocation"}`, codes.Canceled, "restate: the invocation was cancelled"},
		{"killed", 409, `{"code":409,"message":"killed","source":"invocation"}`, codes.Aborted, "restate: the invocation was killed"},
		{"workflow already started", 409, `{"code":409,"message":"the workflow method was already invoked","source":"invocation"}`, codes.AlreadyExists, ""},
		{"too large", 413, `{"code":413,"message":"payload too large","source":"ingress"}`, codes.ResourceExhausted, ""},
		{"overloaded", 429, `{"code":429,"message":"overloaded","source":"ingress"}`, codes.Unavailable, "restate is overloaded and shed the call; retry later (HTTP 429): overloaded"},
		{"routing failure", 503, `{"code":503,"message":"internal routing error","source":"ingress"}`, codes.Unavailable, "restate cannot take the call now (a node or partition is unavailable); retry later (HTTP 503): internal routing error"},
		{"not ready", 470, `{"code":470,"message":"the invocation exists but has not completed yet","source":"ingress"}`, codes.FailedPrecondition, ""},
		{"native terminal 500", 500, `{"code":500,"message":"native failure","source":"invocation"}`, codes.Unknown, "native failure"},
		{"native gRPC-coded terminal", 500, `{"code":5,"message":"gone","source":"invocation"}`, codes.NotFound, "gone"},
		{"callee status in metadata", 404, `{"code":404,"message":"x","metadata":{"grpc-status":"5","grpc-message":"order 42 not found"},"source":"invocation"}`, codes.NotFound, "order 42 not found"},
		{"not JSON", 502, `<html>bad gateway</html>`, codes.Unavailable, "restate ingress answered HTTP 502 Bad Gateway: <html>bad gateway</html>"},
		// Every other status Restate, its HTTP server or a proxy in front of it can answer.
		{"header block too large (no body)", 431, ``, codes.ResourceExhausted, "restate ingress answered HTTP 431 Request Header Fields Too Large; send less metadata"},
		{"method not allowed", 405, `{"code":405,"message":"method not allowed","source":"ingress"}`, codes.Unimplemented, "restate: method not allowed"},
		{"request timeout", 408, ``, codes.Unavailable, "restate ingress answered HTTP 408 Request Timeout"},
		{"conflict", 409, `{"code":409,"message":"conflict","source":"ingress"}`, codes.Aborted, ""},
		{"unsupported media type", 415, `{"code":415,"message":"unsupported media type","source":"ingress"}`, codes.InvalidArgument, ""},
		{"URI too long", 414, ``, codes.ResourceExhausted, ""},
		{"not ready, no body", 470, ``, codes.FailedPrecondition, "restate ingress answered HTTP 470 Not Ready"},
		{"internal error", 500, "{\"code\":500,\"message\":\"cannot read body: invalid request body\\n\\nStack backtrace:\\n   0: anyhow\",\"source\":\"ingress\"}", codes.Internal, "restate: cannot read body: invalid request body"},
		{"not implemented", 501, `{"code":501,"message":"not implemented","source":"ingress"}`, codes.Unimplemented, ""},
		{"unavailable, no body", 503, ``, codes.Unavailable, "restate cannot take the call now (a node or partition is unavailable); retry later: restate ingress answered HTTP 503 Service Unavailable"},
		{"gateway timeout", 504, `<html>timeout</html>`, codes.Unavailable, ""},
		{"unknown status", 418, ``, codes.Unknown, "restate ingress answered HTTP 418 I'm a teapot"},
		// A native handler's terminal error codes, the inverse of the inbound side's mapping.
		{"handler 400", 400, `{"code":400,"message":"bad","source":"invocation"}`, codes.InvalidArgument, "bad"},
		{"handler 408", 408, `{"code":408,"message":"slow","source":"invocation"}`, codes.DeadlineExceeded, "slow"},
		{"handler 409", 409, `{"code":409,"message":"taken","source":"invocation"}`, codes.Aborted, "taken"},
		{"handler 429", 429, `{"code":429,"message":"quota","source":"invocation"}`, codes.ResourceExhausted, "quota"},
		{"handler 499", 499, `{"code":499,"message":"gone","source":"invocation"}`, codes.Canceled, "gone"},
		{"handler 501", 501, `{"code":501,"message":"no","source":"invocation"}`, codes.Unimplemented, "no"},
		{"handler 503", 503, `{"code":503,"message":"later","source":"invocation"}`, codes.Unavailable, "later"},
		{"handler 504", 504, `{"code":504,"message":"late","source":"invocation"}`, codes.DeadlineExceeded, "late"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := StatusFromResponse(tc.http, []byte(tc.body))
			if st.Code() != tc.code || (tc.msg != "" && st.Message() != tc.msg) {
				t.Errorf("StatusFromResponse(%d, %s) = %v %q, want %v %q", tc.http, tc.body, st.Code(), st.Message(), tc.code, tc.msg)
			}
		})
	}
}

func TestStatusMetadataRoundTrip(t *testing.T) {
	want, _ := status.New(codes.InvalidArgument, "bad quantity\n☺").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "quantity", Description: "must be positive"}},
	})
	md := StatusMetadata(want)
	got, ok := fromMetadata(md)
	if !ok || !proto.Equal(got.Proto(), want.Proto()) {
		t.Errorf("round trip of %v gave %v (ok %v)", want.Proto(), got.Proto(), ok)
	}
	// A details blob that does not match the code is ignored, not trusted.
	md["grpc-status"] = "7"
	got, _ = fromMetadata(md)
	if got.Code() != codes.PermissionDenied || len(got.Details()) != 0 {
		t.Errorf("mismatched details: got %v", got.Proto())
	}
}
