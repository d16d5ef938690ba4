package descriptors

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	"google.golang.org/grpc"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Resolver finds a gRPC service by its full name ("orders.v1.Orders").
type Resolver interface {
	Service(ctx context.Context, name string) (protoreflect.ServiceDescriptor, error)
}

// Method finds the method of a full gRPC method name ("/pkg.Service/Method").
func Method(ctx context.Context, r Resolver, fullMethod string) (protoreflect.MethodDescriptor, error) {
	svc, m, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return nil, fmt.Errorf("bad method name %q", fullMethod)
	}
	sd, err := r.Service(ctx, svc)
	if err != nil {
		return nil, err
	}
	md := sd.Methods().ByName(protoreflect.Name(m))
	if md == nil {
		return nil, fmt.Errorf("service %s has no method %s", svc, m)
	}
	return md, nil
}

// Files resolves from a fixed set of files.
type Files struct{ files *protoregistry.Files }

// Load reads a FileDescriptorSet (protoc --include_imports --descriptor_set_out=FILE).
func Load(path string) (*Files, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("%s is not a FileDescriptorSet: %w", path, err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (build it with --include_imports)", path, err)
	}
	return &Files{files: files}, nil
}

// FromRegistry resolves from files already linked into the program.
func FromRegistry(files *protoregistry.Files) *Files { return &Files{files: files} }

func (f *Files) Service(_ context.Context, name string) (protoreflect.ServiceDescriptor, error) {
	d, err := f.files.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, fmt.Errorf("service %s is not in the descriptor set", name)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is a %T, not a service", name, d)
	}
	return sd, nil
}

// Reflection resolves through a server's reflection service (grpc.reflection.v1), caching
// what it learnt. A failed lookup is not cached: the server may be starting.
type Reflection struct {
	conn grpc.ClientConnInterface

	mu    sync.Mutex
	cache map[string]protoreflect.ServiceDescriptor
}

// NewReflection returns a resolver asking the server behind conn.
func NewReflection(conn grpc.ClientConnInterface) *Reflection {
	return &Reflection{conn: conn, cache: map[string]protoreflect.ServiceDescriptor{}}
}

func (r *Reflection) Service(ctx context.Context, name string) (protoreflect.ServiceDescriptor, error) {
	r.mu.Lock()
	sd, ok := r.cache[name]
	r.mu.Unlock()
	if ok {
		return sd, nil
	}
	sd, err := r.fetch(ctx, name)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.cache[name] = sd
	r.mu.Unlock()
	return sd, nil
}

func (r *Reflection) fetch(ctx context.Context, name string) (protoreflect.ServiceDescriptor, error) {
	stream, err := rpb.NewServerReflectionClient(r.conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("server reflection: %w", err)
	}
	defer stream.CloseSend()
	ask := func(req *rpb.ServerReflectionRequest) ([][]byte, error) {
		if err := stream.Send(req); err != nil {
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if e := resp.GetErrorResponse(); e != nil {
			return nil, fmt.Errorf("%s", e.GetErrorMessage())
		}
		return resp.GetFileDescriptorResponse().GetFileDescriptorProto(), nil
	}
	raw, err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: name}})
	if err != nil {
		return nil, fmt.Errorf("server reflection for %s: %w", name, err)
	}
	// The answer holds the file and usually its dependencies; fetch the ones it lacks.
	set := map[string]*descriptorpb.FileDescriptorProto{}
	var add func([][]byte) error
	add = func(raw [][]byte) error {
		for _, b := range raw {
			fd := &descriptorpb.FileDescriptorProto{}
			if err := proto.Unmarshal(b, fd); err != nil {
				return err
			}
			set[fd.GetName()] = fd
		}
		for _, fd := range set {
			for _, dep := range fd.GetDependency() {
				if _, ok := set[dep]; ok {
					continue
				}
				more, err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: dep}})
				if err != nil {
					return fmt.Errorf("file %s: %w", dep, err)
				}
				return add(more)
			}
		}
		return nil
	}
	if err := add(raw); err != nil {
		return nil, fmt.Errorf("server reflection for %s: %w", name, err)
	}
	fds := &descriptorpb.FileDescriptorSet{}
	for _, fd := range set {
		fds.File = append(fds.File, fd)
	}
	files, err := protodesc.NewFiles(fds)
	if err != nil {
		return nil, fmt.Errorf("server reflection for %s: %w", name, err)
	}
	return FromRegistry(files).Service(ctx, name)
}
