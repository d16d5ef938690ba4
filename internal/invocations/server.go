// Package invocations serves the sidecar's management API (restategrpc.invocations.v1): attach
// to, read the output of, cancel, kill and look up invocations, by id, by a call's idempotency
// key, or by workflow id.
package invocations

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/restate-grpc/restate-grpc/api/invocationsv1"
	"github.com/restate-grpc/restate-grpc/internal/restatehttp"
)

// Ingress is what the service needs of the Restate ingress.
type Ingress interface {
	Attach(ctx context.Context, r restatehttp.Ref) (*restatehttp.Result, error)
	Output(ctx context.Context, r restatehttp.Ref) (*restatehttp.Result, error)
	Lookup(ctx context.Context, r restatehttp.Ref) (string, error)
}

// Admin is what the service needs of the Restate admin API.
type Admin interface {
	Cancel(ctx context.Context, id string) error
	Kill(ctx context.Context, id string) error
	InvocationTarget(ctx context.Context, id string) (restatehttp.Target, bool, error)
}

// Server implements the management API.
type Server struct {
	pb.UnimplementedInvocationsServer
	ingress Ingress
	admin   Admin // nil when no admin URL is configured
}

// NewServer returns the service; admin may be nil, and then Cancel and Kill say how to enable them.
func NewServer(ingress Ingress, admin Admin) *Server {
	return &Server{ingress: ingress, admin: admin}
}

// Ref converts a Target to the ingress's form.
func Ref(t *pb.Target) (restatehttp.Ref, error) {
	switch x := t.GetTarget().(type) {
	case *pb.Target_InvocationId:
		if x.InvocationId == "" {
			break
		}
		return restatehttp.Ref{ID: x.InvocationId}, nil
	case *pb.Target_Call:
		c := x.Call
		if c.GetService() == "" || c.GetHandler() == "" || c.GetIdempotencyKey() == "" {
			return restatehttp.Ref{}, status.Error(codes.InvalidArgument, "a call target needs service, handler and idempotency_key (and key for an object)")
		}
		return restatehttp.Ref{Idempotent: &restatehttp.Target{Service: c.GetService(), Key: c.GetKey(), Keyed: c.GetKey() != "", Handler: c.GetHandler()}, Key: c.GetIdempotencyKey()}, nil
	case *pb.Target_Workflow:
		w := x.Workflow
		if w.GetName() == "" || w.GetId() == "" {
			return restatehttp.Ref{}, status.Error(codes.InvalidArgument, "a workflow target needs name and id")
		}
		return restatehttp.Ref{Workflow: &restatehttp.Target{Service: w.GetName(), Key: w.GetId(), Keyed: true}}, nil
	}
	return restatehttp.Ref{}, status.Error(codes.InvalidArgument, "no target: set invocation_id, call or workflow")
}

func (s *Server) Attach(ctx context.Context, t *pb.Target) (*pb.Result, error) {
	return s.result(ctx, t, s.ingress.Attach)
}

func (s *Server) Output(ctx context.Context, t *pb.Target) (*pb.Result, error) {
	return s.result(ctx, t, s.ingress.Output)
}

func (s *Server) result(ctx context.Context, t *pb.Target, get func(context.Context, restatehttp.Ref) (*restatehttp.Result, error)) (*pb.Result, error) {
	r, err := Ref(t)
	if err != nil {
		return nil, err
	}
	res, err := get(ctx, r)
	if err != nil {
		return nil, err
	}
	id := res.InvocationID
	if id == "" {
		id, _ = s.ingress.Lookup(ctx, r)
	}
	out := &pb.Result{InvocationId: id, Payload: res.Body}
	if r.ID != "" && s.admin != nil {
		// By id, the caller may not know the method whose response the payload is. Without
		// it the answer is still whole: the payload as bytes.
		if target, found, err := s.admin.InvocationTarget(ctx, r.ID); err == nil && found {
			out.Target = target.Service + "/" + target.Handler
		}
	}
	return out, nil
}

func (s *Server) Cancel(ctx context.Context, t *pb.Target) (*pb.CancelResponse, error) {
	id, err := s.control(ctx, t, "cancel", func(ctx context.Context, id string) error { return s.admin.Cancel(ctx, id) })
	return &pb.CancelResponse{InvocationId: id}, err
}

func (s *Server) Kill(ctx context.Context, t *pb.Target) (*pb.KillResponse, error) {
	id, err := s.control(ctx, t, "kill", func(ctx context.Context, id string) error { return s.admin.Kill(ctx, id) })
	return &pb.KillResponse{InvocationId: id}, err
}

func (s *Server) control(ctx context.Context, t *pb.Target, verb string, do func(context.Context, string) error) (string, error) {
	if s.admin == nil {
		return "", status.Errorf(codes.FailedPrecondition, "%s needs Restate's admin API: set outbound.admin in the sidecar's config", verb)
	}
	r, err := Ref(t)
	if err != nil {
		return "", err
	}
	id, err := s.ingress.Lookup(ctx, r)
	if err != nil {
		return "", err
	}
	return id, do(ctx, id)
}

func (s *Server) Lookup(ctx context.Context, t *pb.Target) (*pb.LookupResponse, error) {
	r, err := Ref(t)
	if err != nil {
		return nil, err
	}
	id, err := s.ingress.Lookup(ctx, r)
	if err != nil {
		return nil, err
	}
	return &pb.LookupResponse{InvocationId: id}, nil
}
