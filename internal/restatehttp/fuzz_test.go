package restatehttp

import (
	"testing"

	"google.golang.org/grpc/codes"
)

// FuzzStatusFromResponse: any error body maps to a valid gRPC status with a message, and a
// well-formed grpc-status in the metadata decides the code.
func FuzzStatusFromResponse(f *testing.F) {
	f.Add(404, []byte(`{"code":404,"message":"service 'a.B' not found, make sure to register the service before calling it.","source":"ingress"}`))
	f.Add(409, []byte(`{"code":409,"message":"Cancelled","source":"invocation"}`))
	f.Add(500, []byte(`{"code":5,"message":"gone","metadata":{"grpc-status":"5","grpc-message":"gone","grpc-status-details-bin":"CAUSBGdvbmU="},"source":"invocation"}`))
	f.Add(470, []byte(`{"code":470,"message":"the invocation exists but has not completed yet","source":"ingress"}`))
	f.Add(502, []byte(`<html>`))
	f.Add(0, []byte(`{"metadata":{"grpc-status":"99"}}`))
	f.Fuzz(func(t *testing.T, httpCode int, body []byte) {
		st := StatusFromResponse(httpCode, body)
		if st.Code() > codes.Unauthenticated {
			t.Fatalf("code %d out of range", st.Code())
		}
		if st.Code() == codes.OK {
			t.Fatalf("an error response mapped to OK: %d %q", httpCode, body)
		}
	})
}
