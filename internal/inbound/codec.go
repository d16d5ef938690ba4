package inbound

import (
	"fmt"

	"github.com/restatedev/sdk-go/encoding"
)

// Codec is the endpoint's codec, for native services that should look the same to Restate.
var Codec encoding.Codec = protoBytes{}

// protoBytes is the sdk-go codec of the endpoint: raw protobuf bytes, advertised as
// application/proto like sdk-go's WithProto codec, so native Restate services built from the
// same .proto can call the app and be called by it.
type protoBytes struct{}

func (protoBytes) ContentType() string         { return "application/proto" }
func (protoBytes) JsonSchema(any) any          { return nil }
func (protoBytes) InputRequired() bool         { return false } // an empty message is 0 bytes
func (protoBytes) SetContentTypeIfEmpty() bool { return true }

func (protoBytes) Marshal(v any) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	return nil, fmt.Errorf("inbound codec: cannot marshal %T", v)
}

func (protoBytes) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("inbound codec: cannot unmarshal into %T", v)
	}
	*p = append([]byte(nil), data...)
	return nil
}
