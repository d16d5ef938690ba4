// Command orders is the demo's callee: a plain grpc-go server that knows nothing of Restate. It
// prints every call it executes, with the metadata the inbound sidecar adds.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/examples/orders/ordersv1"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:50051", "gRPC listen address")
	flag.Parse()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer()
	o := &orders{orders: map[string]*ordersv1.Order{}}
	ordersv1.RegisterOrdersServer(s, o)
	ordersv1.RegisterCheckoutServer(s, o)
	ordersv1.RegisterNotifierServer(s, o)
	healthpb.RegisterHealthServer(s, health.NewServer())
	reflection.Register(s)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); s.GracefulStop() }()
	say("orders app listening on %s", *addr)
	if err := s.Serve(l); err != nil {
		log.Fatal(err)
	}
}

func say(format string, a ...any) {
	fmt.Printf("    [orders %s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

type orders struct {
	ordersv1.UnimplementedOrdersServer
	ordersv1.UnimplementedCheckoutServer
	ordersv1.UnimplementedNotifierServer
	mu        sync.Mutex
	orders    map[string]*ordersv1.Order
	delivered int64
}

// seen describes what the sidecar told the app about the call.
func seen(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	var parts []string
	for _, k := range []string{"restate-invocation-id", "restate-key"} {
		if v := md.Get(k); len(v) > 0 {
			parts = append(parts, k+"="+v[0])
		}
	}
	if v := md.Get("traceparent"); len(v) > 0 {
		if f := strings.Split(v[0], "-"); len(f) == 4 {
			parts = append(parts, "trace="+f[1])
		}
	}
	return strings.Join(parts, " ")
}

func (o *orders) AddItem(ctx context.Context, req *ordersv1.AddItemRequest) (*ordersv1.Order, error) {
	if req.GetItem().GetQuantity() <= 0 {
		st, _ := status.New(codes.InvalidArgument, "quantity must be positive").WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "item.quantity", Description: "must be > 0"}},
		})
		say("AddItem refused: quantity %d (%s)", req.GetItem().GetQuantity(), seen(ctx))
		return nil, st.Err()
	}
	time.Sleep(50 * time.Millisecond) // some work, so that overlapping calls would show
	o.mu.Lock()
	defer o.mu.Unlock()
	ord := o.order(req.GetOrderId())
	ord.Items = append(ord.Items, req.GetItem())
	ord.Version++
	say("AddItem %s x%d to %s -> version %d (%s)", req.GetItem().GetSku(), req.GetItem().GetQuantity(), req.GetOrderId(), ord.Version, seen(ctx))
	return ord, nil
}

func (o *orders) order(id string) *ordersv1.Order {
	ord, ok := o.orders[id]
	if !ok {
		ord = &ordersv1.Order{Id: id, Status: "open"}
		o.orders[id] = ord
	}
	return ord
}

func (o *orders) GetOrder(ctx context.Context, req *ordersv1.GetOrderRequest) (*ordersv1.Order, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ord, ok := o.orders[req.GetOrderId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "order %s not found", req.GetOrderId())
	}
	say("GetOrder %s (%s)", req.GetOrderId(), seen(ctx))
	return ord, nil
}

func (o *orders) Run(ctx context.Context, req *ordersv1.CheckoutRequest) (*ordersv1.CheckoutResult, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ord := o.order(req.GetOrderId())
	ord.Status = "paid"
	ord.Version++
	say("Checkout.Run for %s, payment %s (%s)", req.GetOrderId(), req.GetPaymentRef(), seen(ctx))
	return &ordersv1.CheckoutResult{OrderId: req.GetOrderId(), Receipt: "receipt-" + req.GetOrderId()}, nil
}

func (o *orders) Status(ctx context.Context, req *ordersv1.GetOrderRequest) (*ordersv1.Order, error) {
	return o.GetOrder(ctx, req)
}

func (o *orders) Notify(ctx context.Context, req *ordersv1.Notification) (*ordersv1.NotifyAck, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.delivered++
	say("Notify %s: %q (%s)", req.GetCustomer(), req.GetText(), seen(ctx))
	return &ordersv1.NotifyAck{Delivered: o.delivered}, nil
}
