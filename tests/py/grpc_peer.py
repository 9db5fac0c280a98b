#!/usr/bin/env python3
"""A gRPC server and client on grpcio with generic handlers (raw bytes, no generated code),
for the end-to-end gRPC suite.

Service `test.Echo`, methods:
  Unary        (unary-unary)    answers the request bytes, prefixed by the server's name
  ServerStream (unary-stream)   answers N messages `<name>:<i>`, N = the request as a number
  ClientStream (stream-unary)   answers `<name>:<count>:<total bytes>` of the messages received
  Bidi         (stream-stream)  echoes each message, prefixed by the server's name
  Slow         (unary-unary)    waits until cancelled (or 60 s) and records what it saw

    grpc_peer.py serve --name N [--unavailable] [--restart-after K]
        Binds 127.0.0.1:0 (the same port across restarts) and prints `PORT <n>`. Then one
        JSON object per line: {"event": "call", "method", "time_remaining"} per call,
        {"event": "cancelled", "method"} when a Slow call is cancelled by the peer,
        {"event": "restarted"} after a restart. `--unavailable` answers every call with
        UNAVAILABLE (trailers-only, no message). `--restart-after K`: after the K-th call,
        stop gracefully (GOAWAY, in-flight calls finish) and start again on the same port.

    grpc_peer.py call TARGET --kind unary|server|client|bidi [--n N] [--timeout S]
                 [--interval S]
        One call; prints {"code", "details", "messages"} (messages as text). `--interval`
        paces a bidi call's messages, for a stream that lives long.

    grpc_peer.py load TARGET --calls C [--concurrency K]
        C unary calls from K threads on one channel, once it is connected; prints {"ok",
        "errors": {code: n}, "by_server": {name: n}} (all C as NOT_CONNECTED when the
        channel does not connect within 10 s).
"""
import argparse
import json
import queue
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "test.Echo"
LOCK = threading.Lock()


def emit(obj):
    with LOCK:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def handlers(name, unavailable, on_call):
    def record(method, context):
        on_call()
        emit({"event": "call", "method": method, "time_remaining": context.time_remaining()})
        if unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{name} is unavailable")

    def unary(request, context):
        record("Unary", context)
        return name.encode() + b":" + request

    def server_stream(request, context):
        record("ServerStream", context)
        for i in range(int(request.decode() or "0")):
            yield f"{name}:{i}".encode()

    def client_stream(request_iterator, context):
        record("ClientStream", context)
        count = total = 0
        for m in request_iterator:
            count += 1
            total += len(m)
        return f"{name}:{count}:{total}".encode()

    def bidi(request_iterator, context):
        record("Bidi", context)
        for m in request_iterator:
            yield name.encode() + b":" + m

    def slow(request, context):
        record("Slow", context)
        done = threading.Event()

        def cancelled():
            emit({"event": "cancelled", "method": "Slow"})
            done.set()

        context.add_callback(cancelled)
        done.wait(60)
        return b"late"

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
        },
    )


def serve(args):
    calls = {"n": 0}
    restart = threading.Event()

    def on_call():
        with LOCK:
            calls["n"] += 1
            if args.restart_after and calls["n"] == args.restart_after:
                restart.set()

    def start(port):
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=32),
            handlers=[handlers(args.name, args.unavailable, on_call)],
            options=[("grpc.so_reuseport", 1)],
        )
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        return server, bound

    server, port = start(0)
    print(f"PORT {port}", flush=True)
    if args.restart_after:
        restart.wait()
        # Graceful: GOAWAY to every connection, in-flight calls get 5 s to finish.
        server.stop(5).wait()
        for _ in range(200):
            try:
                server, bound = start(port)
                if bound == port:
                    break
            except RuntimeError:
                pass
            time.sleep(0.05)
        emit({"event": "restarted"})
    server.wait_for_termination()


def call(args):
    channel = grpc.insecure_channel(args.target)
    path = f"/{SERVICE}/"
    ident = lambda b: b  # noqa: E731
    messages = []
    try:
        if args.kind == "unary":
            fn = channel.unary_unary(path + "Unary", ident, ident)
            messages = [fn(b"hello", timeout=args.timeout)]
        elif args.kind == "slow":
            fn = channel.unary_unary(path + "Slow", ident, ident)
            messages = [fn(b"slow", timeout=args.timeout)]
        elif args.kind == "server":
            fn = channel.unary_stream(path + "ServerStream", ident, ident)
            messages = list(fn(str(args.n).encode(), timeout=args.timeout))
        elif args.kind == "client":
            fn = channel.stream_unary(path + "ClientStream", ident, ident)
            messages = [fn(iter([b"m" * (i + 1) for i in range(args.n)]), timeout=args.timeout)]
        elif args.kind == "bidi":
            fn = channel.stream_stream(path + "Bidi", ident, ident)

            def paced():
                for i in range(args.n):
                    if i and args.interval:
                        time.sleep(args.interval)
                    yield f"b{i}".encode()

            messages = list(fn(paced(), timeout=args.timeout))
        elif args.kind == "pingpong":
            # Each message is sent only once the answer to the one before has come back.
            fn = channel.stream_stream(path + "Bidi", ident, ident)
            answered = queue.Queue()

            def turns():
                for i in range(args.n):
                    if i:
                        answered.get()
                    yield f"b{i}".encode()

            for answer in fn(turns(), timeout=args.timeout):
                messages.append(answer)
                answered.put(None)
        code, details = "OK", ""
    except grpc.RpcError as e:
        code, details = e.code().name, e.details() or ""
    print(json.dumps({"code": code, "details": details,
                      "messages": [m.decode("latin-1") for m in messages]}))


def load(args):
    channel = grpc.insecure_channel(args.target)
    fn = channel.unary_unary(f"/{SERVICE}/Unary", lambda b: b, lambda b: b)
    result = {"ok": 0, "errors": {}, "by_server": {}, "error_details": []}
    counter = {"next": 0}
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
    except grpc.FutureTimeoutError:
        result["errors"]["NOT_CONNECTED"] = args.calls
        result["error_details"].append(f"no HTTP/2 connection to {args.target} within 10 s")
        print(json.dumps(result))
        return

    def worker():
        while True:
            with LOCK:
                if counter["next"] >= args.calls:
                    return
                counter["next"] += 1
            try:
                reply = fn(b"x", timeout=30)
                server = reply.decode("latin-1").split(":", 1)[0]
                with LOCK:
                    result["ok"] += 1
                    result["by_server"][server] = result["by_server"].get(server, 0) + 1
            except grpc.RpcError as e:
                with LOCK:
                    name = e.code().name
                    result["errors"][name] = result["errors"].get(name, 0) + 1
                    if len(result["error_details"]) < 5:
                        result["error_details"].append(e.details() or "")

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(result))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--unavailable", action="store_true")
    s.add_argument("--restart-after", type=int, default=0)
    c = sub.add_parser("call")
    c.add_argument("target")
    c.add_argument("--kind", required=True,
                   choices=["unary", "server", "client", "bidi", "pingpong", "slow"])
    c.add_argument("--n", type=int, default=3)
    c.add_argument("--timeout", type=float, default=30.0)
    c.add_argument("--interval", type=float, default=0.0,
                   help="bidi: seconds between two messages")
    lo = sub.add_parser("load")
    lo.add_argument("target")
    lo.add_argument("--calls", type=int, required=True)
    lo.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    {"serve": serve, "call": call, "load": load}[args.cmd](args)


if __name__ == "__main__":
    main()
