"""WebSocket peers of the mutual TLS tunnel suite (tests/tests/mtls_tunnel.rs), on the
`websockets` library.

    ws_peer.py serve
        Binds 127.0.0.1:0 and prints `PORT <n>`. Each connection is greeted with
        "hello", each text message is answered with "echo:<message>", and one JSON line is
        printed per event: {"event": "message", "data": ...} for each message received,
        {"event": "closed", "code": ..., "reason": ...} when the peer closed the session.

    ws_peer.py client URL --messages N [--ca FILE --cert FILE --key FILE]
        Opens URL (wss:// with --ca, presenting --cert/--key, the server's chain checked
        against --ca but not its name: SVIDs carry a URI, no host name), reads the greeting,
        sends N messages, each after the previous one's echo, then closes with 1000 "done"
        and prints {"greeting", "echoes", "close_code", "close_reason"} where the close
        fields are those of the server's closing frame.
"""

import argparse
import asyncio
import json
import ssl
import sys

import websockets


def emit(obj):
    print(json.dumps(obj), flush=True)


async def serve():
    async def handler(ws, *_path):
        await ws.send("hello")
        try:
            async for message in ws:
                emit({"event": "message", "data": message})
                await ws.send("echo:" + message)
        except websockets.ConnectionClosed:
            pass
        emit({"event": "closed", "code": ws.close_code, "reason": ws.close_reason})

    async with websockets.serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Future()


async def client(args):
    context = None
    if args.ca:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(args.ca)
        context.load_cert_chain(args.cert, args.key)
    async with websockets.connect(
        args.url, ssl=context, open_timeout=30, close_timeout=30
    ) as ws:
        greeting = await asyncio.wait_for(ws.recv(), 30)
        echoes = []
        for i in range(args.messages):
            await ws.send(f"message {i} " + "x" * (i * 1000))
            echoes.append(await asyncio.wait_for(ws.recv(), 30))
        await ws.close(code=1000, reason="done")
        emit({
            "greeting": greeting,
            "echoes": echoes,
            "close_code": ws.close_code,
            "close_reason": ws.close_reason,
        })


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve")
    c = sub.add_parser("client")
    c.add_argument("url")
    c.add_argument("--messages", type=int, default=3)
    c.add_argument("--ca")
    c.add_argument("--cert")
    c.add_argument("--key")
    args = parser.parse_args()
    if args.command == "serve":
        asyncio.run(serve())
    else:
        asyncio.run(client(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
