// Command client is the grpc-go one of the interception tests' unmodified clients (client.py
// and client.js are the others, with the same arguments and output): it dials the target as an
// app would, with no knowledge of a sidecar (the proxy variables, when set, are honoured by
// grpc-go itself), and makes the calls its arguments list, in order:
//
//	client TARGET unary:/pkg.Svc/Method:HEX stream:/pkg.Svc/Method:HEX ...
//
// HEX is the serialized request message. Each call prints one line: "OK ID HEX[,HEX...]" with
// the header's restate-invocation-id ("-" when none) and the response messages, or
// "ERR CODE MESSAGE" with the numeric gRPC status code.
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/restate-grpc/restate-grpc/internal/rawcodec"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: client TARGET unary|stream:/pkg.Svc/Method:HEX ...")
		os.Exit(2)
	}
	conn, err := grpc.NewClient(os.Args[1], grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawcodec.Codec)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer conn.Close()
	for _, op := range os.Args[2:] {
		kind, method, req, err := parse(op)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println(call(conn, kind, method, req))
	}
}

func parse(op string) (kind, method string, req []byte, err error) {
	kind, rest, ok1 := strings.Cut(op, ":")
	i := strings.LastIndex(rest, ":")
	if !ok1 || i < 0 || (kind != "unary" && kind != "stream") {
		return "", "", nil, fmt.Errorf("bad call %q: want unary|stream:/pkg.Svc/Method:HEX", op)
	}
	req, err = hex.DecodeString(rest[i+1:])
	return kind, rest[:i], req, err
}

func call(conn *grpc.ClientConn, kind, method string, req []byte) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var hdr metadata.MD
	var resps []string
	if kind == "unary" {
		var resp []byte
		if err := conn.Invoke(ctx, method, &req, &resp, grpc.Header(&hdr)); err != nil {
			return fail(err)
		}
		resps = append(resps, hex.EncodeToString(resp))
	} else {
		s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method)
		if err != nil {
			return fail(err)
		}
		if err := s.SendMsg(&req); err != nil {
			return fail(err)
		}
		if err := s.CloseSend(); err != nil {
			return fail(err)
		}
		for {
			var resp []byte
			err := s.RecvMsg(&resp)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fail(err)
			}
			resps = append(resps, hex.EncodeToString(resp))
		}
		hdr, _ = s.Header()
	}
	id := "-"
	if v := hdr.Get("restate-invocation-id"); len(v) > 0 {
		id = v[0]
	}
	return fmt.Sprintf("OK %s %s", id, strings.Join(resps, ","))
}

func fail(err error) string {
	st := status.Convert(err)
	return fmt.Sprintf("ERR %d %s", st.Code(), strings.ReplaceAll(st.Message(), "\n", " "))
}
