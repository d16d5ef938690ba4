package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/restate-grpc/restate-grpc/api/invocationsv1"
	"github.com/restate-grpc/restate-grpc/internal/descriptors"
)

// invocationTarget is how the invocation a verb acts on is named, from the flags.
type invocationTarget struct {
	addr, service, key, handler, idem, workflow, workflowID string
	asJSON                                                  bool
	timeout                                                 time.Duration
	// Where the payload's type comes from: a descriptor set file or the app's reflection, and
	// the method whose response it is.
	protoSet, reflect, method string
}

// invocationsCmd is the CLI of the management API served on the outbound listener.
func invocationsCmd() *cobra.Command {
	var o invocationTarget
	cmd := &cobra.Command{
		Use:   "invocations attach|output|cancel|kill|lookup [INVOCATION_ID]",
		Short: "Manage invocations through the sidecar's outbound listener",
		Long: `Manage invocations through the management API on the sidecar's outbound listener.

Name the invocation by its id (the restate-invocation-id header of a durable answer), or by
  --service S [--key K] --handler H --idempotency-key I    a call made with an idempotency key
  --workflow W --workflow-id ID                             a workflow

A result's payload is printed as JSON, as grpcurl prints a response, when its type is known:
descriptors from --proto-set FILE (protoc --include_imports --descriptor_set_out=FILE) or from
the app's server reflection (--reflect ADDR), and the method from --method /pkg.Service/Method,
by default the invocation's target (by id, read from Restate's admin API when the sidecar has
outbound.admin), a call's --service/--handler or a workflow's Run. Otherwise it is raw bytes.`,
		Args: cobra.ArbitraryArgs,
		// A verb is required; cobra itself reports unknown ones only for the root command.
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError("a verb is required: attach, output, cancel, kill or lookup")
			}
			return usageError("unknown verb %q: want attach, output, cancel, kill or lookup", args[0])
		},
	}
	f := cmd.PersistentFlags()
	f.StringVar(&o.addr, "addr", "127.0.0.1:15001", "the sidecar's outbound listener")
	f.StringVar(&o.service, "service", "", "Restate service of a call")
	f.StringVar(&o.key, "key", "", "object key of a call")
	f.StringVar(&o.handler, "handler", "", "handler (method) of a call")
	f.StringVar(&o.idem, "idempotency-key", "", "idempotency key of a call")
	f.StringVar(&o.workflow, "workflow", "", "workflow name")
	f.StringVar(&o.workflowID, "workflow-id", "", "workflow id")
	f.BoolVar(&o.asJSON, "json", false, "print JSON")
	f.DurationVar(&o.timeout, "timeout", time.Minute, "how long to wait (attach waits for the invocation to end)")
	f.StringVar(&o.protoSet, "proto-set", "", "FileDescriptorSet of the payload's types (alias --descriptor-set)")
	f.StringVar(&o.reflect, "reflect", "", "the app's gRPC address, whose server reflection describes the payload's types")
	f.StringVar(&o.method, "method", "", "the method whose response the payload is, /pkg.Service/Method; default the invocation's target, the call's or the workflow's")
	cmd.SetGlobalNormalizationFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "descriptor-set" {
			name = "proto-set"
		}
		return pflag.NormalizedName(name)
	})
	for _, v := range []struct{ verb, short string }{
		{"attach", "Wait for an invocation to end and print its result"},
		{"output", "Print an invocation's result if it has ended"},
		{"cancel", "Cancel an invocation: it stops at its next step; callers get CANCELLED"},
		{"kill", "Kill an invocation at once; callers get ABORTED"},
		{"lookup", "Print the id of an invocation named by a call or a workflow"},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   v.verb + " [INVOCATION_ID]",
			Short: v.short,
			Args:  cobra.MaximumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return invoke(cmd.Context(), v.verb, o, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
			},
		})
	}
	return cmd
}

// invoke calls the management API's verb on the invocation that args or o name.
func invoke(ctx context.Context, verb string, o invocationTarget, args []string, stdout, stderr io.Writer) error {
	t := &pb.Target{}
	switch {
	case len(args) == 1:
		t.Target = &pb.Target_InvocationId{InvocationId: args[0]}
	case o.workflow != "" || o.workflowID != "":
		t.Target = &pb.Target_Workflow{Workflow: &pb.Workflow{Name: o.workflow, Id: o.workflowID}}
	case o.service != "" || o.handler != "" || o.idem != "":
		t.Target = &pb.Target_Call{Call: &pb.IdempotentCall{Service: o.service, Key: o.key, Handler: o.handler, IdempotencyKey: o.idem}}
	default:
		return usageError("name an invocation: an id, a call (--service --handler --idempotency-key) or a workflow (--workflow --workflow-id)")
	}
	conn, err := grpc.NewClient(o.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return failed(err)
	}
	defer conn.Close()
	c := pb.NewInvocationsClient(conn)
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
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
	}
	if err != nil {
		// The API's status is the answer, printed as it is rather than as a CLI error.
		st := status.Convert(err)
		if o.asJSON {
			fmt.Fprintf(stdout, "{\"code\":%q,\"message\":%q}\n", st.Code().String(), st.Message())
		} else {
			fmt.Fprintf(stderr, "%s: %s\n", st.Code(), st.Message())
		}
		return errQuiet
	}
	var decoded []byte
	var typ string
	if r, ok := resp.(*pb.Result); ok && (o.protoSet != "" || o.reflect != "") {
		if decoded, typ, err = o.decode(ctx, r); err != nil {
			fmt.Fprintf(stderr, "payload not decoded: %v\n", err)
		}
	}
	if o.asJSON {
		b, _ := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(resp)
		if decoded != nil {
			// As grpcurl: the response as JSON in place of its bytes.
			b, _ = json.Marshal(struct {
				InvocationID string          `json:"invocationId"`
				Type         string          `json:"type"`
				Payload      json.RawMessage `json:"payload"`
			}{resp.(*pb.Result).GetInvocationId(), typ, decoded})
		}
		fmt.Fprintf(stdout, "%s\n", b)
		return nil
	}
	if decoded != nil {
		fmt.Fprintf(stdout, "invocation  %s\npayload     %s\n%s\n", resp.(*pb.Result).GetInvocationId(), typ, decoded)
		return nil
	}
	printResult(stdout, verb, resp)
	return nil
}

// decode reads r's payload as the response of its method, described by o's descriptors: the
// method of --method, else r's target (an invocation named by its id), else the call's or
// the workflow's.
func (o invocationTarget) decode(ctx context.Context, r *pb.Result) ([]byte, string, error) {
	method := o.method
	switch {
	case method != "":
		if !strings.HasPrefix(method, "/") {
			method = "/" + method
		}
	case r.GetTarget() != "":
		method = "/" + r.GetTarget()
	case o.service != "" && o.handler != "":
		method = "/" + o.service + "/" + o.handler
	case o.workflow != "":
		method = "/" + o.workflow + "/Run"
	default:
		return nil, "", errors.New("its method is not known (the sidecar has no outbound.admin to read it from): name it with --method /pkg.Service/Method")
	}
	var res descriptors.Resolver
	if o.protoSet != "" {
		files, err := descriptors.Load(o.protoSet)
		if err != nil {
			return nil, "", err
		}
		res = files
	} else {
		conn, err := grpc.NewClient(o.reflect, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, "", err
		}
		defer conn.Close()
		res = descriptors.NewReflection(conn)
	}
	return descriptors.ResponseJSON(ctx, res, method, r.GetPayload(), !o.asJSON)
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
