package config

import "strings"

// grpcCodes are the gRPC code names, indexed by code, so this package need not import grpc.
var grpcCodes = []string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// CodeByName returns the gRPC code named name (UNAVAILABLE, or Unavailable).
func CodeByName(name string) (uint32, bool) {
	for i, n := range grpcCodes {
		if strings.EqualFold(strings.ReplaceAll(n, "_", ""), strings.ReplaceAll(name, "_", "")) {
			return uint32(i), true
		}
	}
	return 0, false
}
