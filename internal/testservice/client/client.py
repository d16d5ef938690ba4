"""The Python one of the interception tests' unmodified clients: gRPC C-core, as Debian's
python3-grpcio ships it (run it with Debian's /usr/bin/python3). Arguments and output are those
of the grpc-go client (main.go); messages move as raw bytes, so no generated code is needed, and
the proxy variables, when set, are honoured by C-core itself."""

import sys

import grpc


def call(channel, kind, method, req):
    try:
        if kind == "unary":
            resp, c = channel.unary_unary(method).with_call(req, timeout=20)
            resps = [resp]
        else:
            c = channel.unary_stream(method)(req, timeout=20)
            resps = list(c)
        ids = [v for k, v in c.initial_metadata() if k == "restate-invocation-id"]
        return "OK %s %s" % (ids[0] if ids else "-", ",".join(r.hex() for r in resps))
    except grpc.RpcError as e:
        return "ERR %d %s" % (e.code().value[0], (e.details() or "").replace("\n", " "))


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: client.py TARGET unary|stream:/pkg.Svc/Method:HEX ...")
    with grpc.insecure_channel(sys.argv[1]) as channel:
        for op in sys.argv[2:]:
            kind, rest = op.split(":", 1)
            method, req = rest.rsplit(":", 1)
            print(call(channel, kind, method, bytes.fromhex(req)), flush=True)


main()
