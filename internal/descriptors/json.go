package descriptors

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
)

// ResponseJSON decodes payload as the response of fullMethod ("/pkg.Service/Method") and
// returns it as protojson writes it, indented when indent is set, and the response type's
// name. Only tools call it (`sidecar invocations`): the call paths never decode a message.
func ResponseJSON(ctx context.Context, r Resolver, fullMethod string, payload []byte, indent bool) ([]byte, string, error) {
	md, err := Method(ctx, r, fullMethod)
	if err != nil {
		return nil, "", err
	}
	out := md.Output()
	msg := dynamicpb.NewMessage(out)
	if err := proto.Unmarshal(payload, msg); err != nil {
		return nil, "", fmt.Errorf("the payload is not a %s: %w", out.FullName(), err)
	}
	opts := protojson.MarshalOptions{}
	if indent {
		opts.Multiline, opts.Indent = true, "  "
	}
	b, err := opts.Marshal(msg)
	if err != nil {
		return nil, "", fmt.Errorf("%s as JSON: %w", out.FullName(), err)
	}
	return b, string(out.FullName()), nil
}
