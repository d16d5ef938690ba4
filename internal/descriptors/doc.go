// Package descriptors finds the protobuf types of gRPC methods, from a FileDescriptorSet file or a
// server's reflection, and reads single fields out of raw message bytes without decoding the
// message: the sidecar needs a method's kind (unary or streaming) and, for some routes, one
// field of the request as an object key. Tools (`sidecar invocations`) also decode a whole
// response to JSON with them (ResponseJSON); the call paths never do.
package descriptors
