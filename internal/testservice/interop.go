package testservice

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// InteropCase is one of grpc-go's interop client cases; it fails the test binary
// (grpclog.Fatal) on any mismatch.
type InteropCase struct {
	Name string
	Run  func(context.Context, testgrpc.TestServiceClient, ...grpc.CallOption)
	// Durable: it can run on durable routes (its methods there are unary and it checks no
	// response metadata of the callee, which does not cross Restate).
	Durable bool
}

// InteropCases are the cases that need only a TestService client.
var InteropCases = []InteropCase{
	{"empty_unary", interop.DoEmptyUnaryCall, true},
	{"large_unary", interop.DoLargeUnaryCall, true},
	{"client_streaming", interop.DoClientStreaming, false},
	{"server_streaming", interop.DoServerStreaming, false},
	{"ping_pong", interop.DoPingPong, false},
	{"empty_stream", interop.DoEmptyStream, false},
	{"timeout_on_sleeping_server", interop.DoTimeoutOnSleepingServer, false},
	{"cancel_after_begin", interop.DoCancelAfterBegin, false},
	{"cancel_after_first_response", interop.DoCancelAfterFirstResponse, false},
	{"custom_metadata", interop.DoCustomMetadata, false},
	{"status_code_and_message", interop.DoStatusCodeAndMessage, true},
	{"special_status_message", interop.DoSpecialStatusMessage, true},
}
