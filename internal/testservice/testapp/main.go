// Command testapp serves the test app in its own process, for the fault tests that kill it.
// Every execution is appended to the -journal file, which outlives the process. With
// -relay-to it is a plain TCP relay instead, the benchmark's floor for a proxy process. Once
// it listens it prints the address, a port of its choosing without -listen, on a line.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/restate-grpc/restate-grpc/internal/testservice"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "gRPC listen address")
	journal := flag.String("journal", "", "file to append executions to")
	relayTo := flag.String("relay-to", "", "relay TCP connections to this address instead of serving the app")
	flag.Parse()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(l.Addr())
	if *relayTo != "" {
		go testservice.Relay(l, *relayTo)
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		return
	}
	app := testservice.NewApp()
	if *journal != "" {
		f, err := os.OpenFile(*journal, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			log.Fatal(err)
		}
		app.JournalTo(f) // O_APPEND writes go straight to the file: a SIGKILL loses none
	}
	s := app.Serve(l)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	s.Stop()
}
