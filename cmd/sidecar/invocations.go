package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/restate-grpc/restate-grpc/api/invocationsv1"
)

const invocationsUsage = `usage: sidecar invocations attach|output|cancel|kill|lookup [flags] [INVOCATION_ID]

Name the invocation by its id (the restate-invocation-id header of a durable answer), or by
  -service S [-key K] -handler H -idempotency-key I    a call made with an idempotency key
  -workflow W -workflow-id ID                           a workflow

flags:
`

// invocationsCmd is the CLI of the management API served on the outbound listener.
func invocationsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("invocations", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, invocationsUsage); fs.PrintDefaults() }
	addr := fs.String("addr", "127.0.0.1:15001", "the sidecar's outbound listener")
	service := fs.String("service", "", "Restate service of a call")
	key := fs.String("key", "", "object key of a call")
	handler := fs.String("handler", "", "handler (method) of a call")
	idem := fs.String("idempotency-key", "", "idempotency key of a call")
	workflow := fs.String("workflow", "", "workflow name")
	workflowID := fs.String("workflow-id", "", "workflow id")
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait (attach waits for the invocation to end)")
	if len(args) == 0 {
		fs.Usage()
		return 2
	}
	verb := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	t := &pb.Target{}
	switch {
	case fs.NArg() == 1:
		t.Target = &pb.Target_InvocationId{InvocationId: fs.Arg(0)}
	case *workflow != "" || *workflowID != "":
		t.Target = &pb.Target_Workflow{Workflow: &pb.Workflow{Name: *workflow, Id: *workflowID}}
	case *service != "" || *handler != "" || *idem != "":
		t.Target = &pb.Target_Call{Call: &pb.IdempotentCall{Service: *service, Key: *key, Handler: *handler, IdempotencyKey: *idem}}
	default:
		fmt.Fprintln(stderr, "sidecar invocations: name an invocation: an id, a call (-service -handler -idempotency-key) or a workflow (-workflow -workflow-id)")
		return 2
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintf(stderr, "sidecar invocations: %v\n", err)
		return 1
	}
	defer conn.Close()
	c := pb.NewInvocationsClient(conn)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var resp proto.Message
	switch verb {
	case "attach":
		resp, err = c.Attach(ctx, t)
	case "output":
		resp, err = c.Output(ctx, t)
	case "cancel":
		resp, err = c.Cancel(ctx, t)
	case "kill":
		resp, err = c.Kill(ctx, t)
	case "lookup":
		resp, err = c.Lookup(ctx, t)
	default:
		fs.Usage()
		return 2
	}
	if err != nil {
		st := status.Convert(err)
		if *asJSON {
			fmt.Fprintf(stdout, "{\"code\":%q,\"message\":%q}\n", st.Code().String(), st.Message())
		} else {
			fmt.Fprintf(stderr, "%s: %s\n", st.Code(), st.Message())
		}
		return 1
	}
	if *asJSON {
		b, _ := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(resp)
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	printResult(stdout, verb, resp)
	return 0
}

func printResult(w io.Writer, verb string, resp proto.Message) {
	switch r := resp.(type) {
	case *pb.Result:
		fmt.Fprintf(w, "invocation  %s\npayload     %d bytes\n", r.GetInvocationId(), len(r.GetPayload()))
		p := r.GetPayload()
		for i := 0; i < len(p) && i < 256; i += 16 {
			fmt.Fprintf(w, "            % x\n", p[i:min(i+16, len(p))])
		}
	case *pb.CancelResponse:
		fmt.Fprintf(w, "invocation  %s\ncancel      requested: it stops at its next step; callers get CANCELLED\n", r.GetInvocationId())
	case *pb.KillResponse:
		fmt.Fprintf(w, "invocation  %s\nkilled\n", r.GetInvocationId())
	case *pb.LookupResponse:
		fmt.Fprintf(w, "invocation  %s\n", r.GetInvocationId())
	}
}
