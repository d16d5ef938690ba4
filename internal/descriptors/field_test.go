package descriptors

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/apipb"
)

func TestFieldPath(t *testing.T) {
	// descriptorpb.FieldDescriptorProto has string, int32, enum and message fields.
	msg := &descriptorpb.FieldDescriptorProto{
		Name:    proto.String("order_id"),
		Number:  proto.Int32(-7),
		Type:    descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
		Options: &descriptorpb.FieldOptions{Packed: proto.Bool(true)},
	}
	raw, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	md := msg.ProtoReflect().Descriptor()
	tests := []struct {
		path, want string
		ok         bool
	}{
		{"name", "order_id", true},
		{"number", "-7", true},
		{"type", "9", true},
		{"options.packed", "true", true},
		{"options.lazy", "", false},
		{"json_name", "", false},
		{"jsonName", "", false},
	}
	for _, tc := range tests {
		fp, err := CompilePath(md, tc.path)
		if err != nil {
			t.Errorf("CompilePath(%q): %v", tc.path, err)
			continue
		}
		got, ok, err := fp.Value(raw)
		if err != nil || got != tc.want || ok != tc.ok {
			t.Errorf("Value(%q) = %q, %v, %v; want %q, %v", tc.path, got, ok, err, tc.want, tc.ok)
		}
	}
	// The last occurrence of a field wins, as when protobuf decodes it.
	twice := append(append([]byte{}, raw...), 0x0a, 0x03, 'n', 'e', 'w')
	fp, _ := CompilePath(md, "name")
	if got, _, _ := fp.Value(twice); got != "new" {
		t.Errorf("Value with the field twice = %q, want the last, new", got)
	}
	if _, _, err := fp.Value([]byte{0x0a, 0xff}); err == nil {
		t.Errorf("Value of a truncated message: no error")
	}
}

func TestCompilePathErrors(t *testing.T) {
	api := (&apipb.Api{}).ProtoReflect().Descriptor()
	tests := []struct {
		md   protoreflect.MessageDescriptor
		path string
		want string
	}{
		{api, "nope", `has no field "nope"`},
		{api, "methods", "is repeated"},
		{api, "name.x", "is not a message"},
		{api, "source_context", "a key needs a string"},
	}
	for _, tc := range tests {
		_, err := CompilePath(tc.md, tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CompilePath(%q) error %v, want %q", tc.path, err, tc.want)
		}
	}
}

// FuzzFieldValue: reading a field out of arbitrary bytes never panics.
func FuzzFieldValue(f *testing.F) {
	raw, _ := proto.Marshal(&descriptorpb.FieldDescriptorProto{Name: proto.String("x"), Options: &descriptorpb.FieldOptions{Packed: proto.Bool(true)}})
	f.Add(raw)
	f.Add([]byte{0x0a, 0xff})
	f.Add([]byte{0x42, 0x02, 0x10, 0x01})
	md := (&descriptorpb.FieldDescriptorProto{}).ProtoReflect().Descriptor()
	paths := []*FieldPath{}
	for _, p := range []string{"name", "number", "options.packed", "type"} {
		fp, err := CompilePath(md, p)
		if err != nil {
			f.Fatal(err)
		}
		paths = append(paths, fp)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, fp := range paths {
			fp.Value(b)
		}
	})
}
