// Command shop is the demo's caller: a plain grpc-go client of the orders app that dials the
// sidecar next to it instead of the orders app. `shop tour` walks through every feature and
// prints what happened; `shop outage` makes one call while the orders app is down.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	_ "google.golang.org/genproto/googleapis/rpc/errdetails" // to print the status details
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/examples/orders/ordersv1"
)

func main() {
	sidecar := flag.String("sidecar", "127.0.0.1:15001", "the outbound sidecar's address")
	flag.Parse()
	conn, err := grpc.NewClient(*sidecar, grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Passthrough calls go to the :authority; durable ones ignore it.
		grpc.WithAuthority("127.0.0.1:50051"))
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	s := shop{orders: ordersv1.NewOrdersClient(conn), checkout: ordersv1.NewCheckoutClient(conn),
		notifier: ordersv1.NewNotifierClient(conn), health: healthpb.NewHealthClient(conn)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	switch flag.Arg(0) {
	case "tour":
		s.tour(ctx)
	case "outage":
		s.outage(ctx)
	default:
		fmt.Fprintln(os.Stderr, "usage: shop [-sidecar addr] tour|outage")
		os.Exit(2)
	}
}

type shop struct {
	orders   ordersv1.OrdersClient
	checkout ordersv1.CheckoutClient
	notifier ordersv1.NotifierClient
	health   healthpb.HealthClient
}

func step(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }
func show(format string, a ...any) { fmt.Printf("    [shop] "+format+"\n", a...) }
func fail(err error)               { fmt.Fprintf(os.Stderr, "shop: %v\n", err); os.Exit(1) }

// durable formats the headers every durable answer carries.
func durable(h metadata.MD) string {
	return fmt.Sprintf("restate-status=%s restate-invocation-id=%s", first(h, "restate-status"), first(h, "restate-invocation-id"))
}

func first(h metadata.MD, k string) string {
	if v := h.Get(k); len(v) > 0 {
		return v[0]
	}
	return "-"
}

func with(ctx context.Context, kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

func (s shop) tour(ctx context.Context) {
	run := fmt.Sprint(time.Now().Unix()) // fresh keys on every run of the demo
	order := "order-" + run

	step("Object call: AddItem on %s (virtual object keyed by metadata order-id), idempotency key add-%s", order, run)
	var h metadata.MD
	o, err := s.orders.AddItem(with(ctx, "order-id", order, "idempotency-key", "add-"+run),
		&ordersv1.AddItemRequest{OrderId: order, Item: &ordersv1.Item{Sku: "book", Quantity: 1}}, grpc.Header(&h))
	if err != nil {
		fail(err)
	}
	show("version %d  %s", o.GetVersion(), durable(h))

	step("The same call again with the same idempotency key: Restate answers from its log, the app does not run")
	o, err = s.orders.AddItem(with(ctx, "order-id", order, "idempotency-key", "add-"+run),
		&ordersv1.AddItemRequest{OrderId: order, Item: &ordersv1.Item{Sku: "book", Quantity: 1}}, grpc.Header(&h))
	if err != nil {
		fail(err)
	}
	show("version %d  %s  (same answer, no new line from the orders app)", o.GetVersion(), durable(h))

	step("Five concurrent AddItem calls on one order: Restate runs them one at a time")
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			o, err := s.orders.AddItem(with(ctx, "order-id", "busy-"+run),
				&ordersv1.AddItemRequest{OrderId: "busy-" + run, Item: &ordersv1.Item{Sku: fmt.Sprint("pen-", i), Quantity: 1}})
			if err != nil {
				fail(err)
			}
			show("pen-%d -> version %d", i, o.GetVersion())
		})
	}
	wg.Wait()

	step("Shared handler: GetOrder reads %s without queueing behind writers", order)
	o, err = s.orders.GetOrder(with(ctx, "order-id", order), &ordersv1.GetOrderRequest{OrderId: order})
	if err != nil {
		fail(err)
	}
	show("order %s: %d item(s), version %d, %s", o.GetId(), len(o.GetItems()), o.GetVersion(), o.GetStatus())

	step("Error fidelity: quantity 0 is refused by the app; its status crosses Restate unchanged")
	_, err = s.orders.AddItem(with(ctx, "order-id", order), &ordersv1.AddItemRequest{OrderId: order, Item: &ordersv1.Item{Sku: "x"}})
	st := status.Convert(err)
	show("code=%s message=%q details=%v", st.Code(), st.Message(), st.Details())

	step("One-way send: Notify answers at once; the app runs it right after")
	_, err = s.notifier.Notify(ctx, &ordersv1.Notification{Customer: "ada", Text: "order received"}, grpc.Header(&h))
	if err != nil {
		fail(err)
	}
	show("answered at once: %s", durable(h))

	step("Delayed send: restate-delay 2s; watch the orders app's clock")
	show("sent at %s", time.Now().Format("15:04:05.000"))
	_, err = s.notifier.Notify(with(ctx, "restate-delay", "2s"), &ordersv1.Notification{Customer: "ada", Text: "your parcel left"}, grpc.Header(&h))
	if err != nil {
		fail(err)
	}
	show("answered at once: %s", durable(h))
	time.Sleep(2500 * time.Millisecond)

	step("Workflow: Checkout.Run for %s (workflow id from the request field order_id) runs once per id", order)
	r, err := s.checkout.Run(ctx, &ordersv1.CheckoutRequest{OrderId: order, PaymentRef: "pay-1"}, grpc.Header(&h))
	if err != nil {
		fail(err)
	}
	show("receipt %s  %s", r.GetReceipt(), durable(h))
	_, err = s.checkout.Run(ctx, &ordersv1.CheckoutRequest{OrderId: order, PaymentRef: "pay-2"})
	show("second Run: %s", status.Code(err))
	o, err = s.checkout.Status(ctx, &ordersv1.GetOrderRequest{OrderId: order})
	if err != nil {
		fail(err)
	}
	show("Status (shared handler): %s", o.GetStatus())

	step("Attach: a send returns an id at once; a later call with restate-attach gets its result, typed")
	_, err = s.orders.AddItem(with(ctx, "order-id", order, "restate-mode", "send", "idempotency-key", "late-"+run),
		&ordersv1.AddItemRequest{OrderId: order, Item: &ordersv1.Item{Sku: "lamp", Quantity: 2}}, grpc.Header(&h))
	if err != nil {
		fail(err)
	}
	id := first(h, "restate-invocation-id")
	show("sent: %s", durable(h))
	o, err = s.orders.AddItem(with(ctx, "order-id", order, "restate-attach", id), &ordersv1.AddItemRequest{OrderId: order})
	if err != nil {
		fail(err)
	}
	show("attached to %s: order version %d with %d items", id, o.GetVersion(), len(o.GetItems()))

	step("Trace context: the caller's traceparent reaches the app (the orders app prints the trace id)")
	_, err = s.orders.GetOrder(with(ctx, "order-id", order, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
		&ordersv1.GetOrderRequest{OrderId: order})
	if err != nil {
		fail(err)
	}
	show("sent trace 4bf92f3577b34da6a3ce929d0e0e4736")

	step("Passthrough: a method no route matches (grpc.health.v1.Health/Check) goes straight to the app")
	hr, err := s.health.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&h))
	if err != nil {
		fail(err)
	}
	show("health %s (no restate headers: %s)", hr.GetStatus(), first(h, "restate-invocation-id"))
}

func (s shop) outage(ctx context.Context) {
	id := fmt.Sprint("outage-", time.Now().Unix())
	start := time.Now()
	show("AddItem on %s while the orders app is down: the call waits, Restate retries", id)
	o, err := s.orders.AddItem(with(ctx, "order-id", id, "idempotency-key", id),
		&ordersv1.AddItemRequest{OrderId: id, Item: &ordersv1.Item{Sku: "umbrella", Quantity: 1}})
	if err != nil {
		fail(err)
	}
	show("answered after %s: version %d; nothing lost", time.Since(start).Round(100*time.Millisecond), o.GetVersion())
}
