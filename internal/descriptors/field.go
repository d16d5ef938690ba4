package descriptors

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// FieldPath is a compiled dotted path of singular fields ("order.id") in one message type.
type FieldPath struct {
	fields []protoreflect.FieldDescriptor
}

// CompilePath resolves path in md. Every step but the last must be a message field; the last
// must be a string, bytes, integer or bool field. Repeated and map fields are refused.
func CompilePath(md protoreflect.MessageDescriptor, path string) (*FieldPath, error) {
	var fp FieldPath
	parts := strings.Split(path, ".")
	for i, name := range parts {
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			fd = md.Fields().ByJSONName(name)
		}
		if fd == nil {
			return nil, fmt.Errorf("message %s has no field %q", md.FullName(), name)
		}
		if fd.Cardinality() == protoreflect.Repeated {
			return nil, fmt.Errorf("field %s is repeated; a key needs a singular field", fd.FullName())
		}
		last := i == len(parts)-1
		switch {
		case !last && fd.Kind() != protoreflect.MessageKind:
			return nil, fmt.Errorf("field %s is not a message, so %q cannot go on", fd.FullName(), path)
		case last && (fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind ||
			fd.Kind() == protoreflect.FloatKind || fd.Kind() == protoreflect.DoubleKind):
			return nil, fmt.Errorf("field %s is a %s; a key needs a string, bytes, integer, bool or enum field", fd.FullName(), fd.Kind())
		}
		fp.fields = append(fp.fields, fd)
		md = fd.Message()
	}
	return &fp, nil
}

// Value reads the field out of a raw message. ok is false when the field is absent (or set
// to its zero value, which proto3 does not put on the wire).
func (fp *FieldPath) Value(raw []byte) (v string, ok bool, err error) {
	msg := raw
	for i, fd := range fp.fields {
		last := i == len(fp.fields)-1
		val, found, err := lastOccurrence(msg, fd.Number())
		if err != nil {
			return "", false, err
		}
		if !found {
			return "", false, nil
		}
		if !last {
			msg = val.bytes
			continue
		}
		return format(fd, val)
	}
	return "", false, nil
}

type wireValue struct {
	typ   protowire.Type
	bytes []byte
	num   uint64
}

// lastOccurrence scans b for field n; the last one wins, as protobuf merges singular fields.
// A repeated sub-message would merge its occurrences; keys are simple enough that the last is
// what a decoder keeps for the key field itself.
func lastOccurrence(b []byte, n protowire.Number) (wireValue, bool, error) {
	var out wireValue
	found := false
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return out, false, fmt.Errorf("malformed request message: %v", protowire.ParseError(l))
		}
		b = b[l:]
		var v wireValue
		v.typ = typ
		switch typ {
		case protowire.VarintType:
			v.num, l = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x uint32
			x, l = protowire.ConsumeFixed32(b)
			v.num = uint64(x)
		case protowire.Fixed64Type:
			v.num, l = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v.bytes, l = protowire.ConsumeBytes(b)
		default:
			l = protowire.ConsumeFieldValue(num, typ, b)
		}
		if l < 0 {
			return out, false, fmt.Errorf("malformed request message: %v", protowire.ParseError(l))
		}
		b = b[l:]
		if num == n {
			out, found = v, true
		}
	}
	return out, found, nil
}

func format(fd protoreflect.FieldDescriptor, v wireValue) (string, bool, error) {
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind:
		if v.typ != protowire.BytesType {
			return "", false, fmt.Errorf("field %s: wire type %d, want bytes", fd.FullName(), v.typ)
		}
		return string(v.bytes), len(v.bytes) > 0, nil
	case protoreflect.BoolKind:
		return strconv.FormatBool(v.num != 0), true, nil
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.EnumKind:
		return strconv.FormatInt(int64(v.num), 10), true, nil
	case protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		return strconv.FormatInt(protowire.DecodeZigZag(v.num), 10), true, nil
	case protoreflect.Sfixed32Kind:
		return strconv.FormatInt(int64(int32(v.num)), 10), true, nil
	case protoreflect.Sfixed64Kind:
		return strconv.FormatInt(int64(v.num), 10), true, nil
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return strconv.FormatUint(v.num&math.MaxUint64, 10), true, nil
	}
	return "", false, fmt.Errorf("field %s: unsupported kind %s", fd.FullName(), fd.Kind())
}
