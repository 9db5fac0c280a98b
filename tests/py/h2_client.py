#!/usr/bin/env python3
"""One HTTP/2 (h2c, prior knowledge) request with the Python `h2` library: headers, a body
sent under flow control, optional trailers; prints one JSON object describing the answer.

Used by the end-to-end suites where curl and nghttp cannot do what a test needs (request
trailers, gRPC framing, a request that is given up after a bound and cancelled).

    h2_client.py HOST:PORT --path /p [--method POST] [--authority a] [--header k:v]...
                 [--body-file F] [--trailer k:v]... [--out F] [--wait SECONDS]

Output (stdout, one line): {"status", "headers", "trailers", "body_len", "body_sha1",
"reset" (RST_STREAM code on our stream or null), "goaway" (code or null), "complete"
(END_STREAM seen), "timed_out" (gave up after --wait and sent RST_STREAM CANCEL),
"closed" (the server closed the connection first)}.
Exit status 0 whenever the exchange ran (whatever the answer); 2 on a usage or connect error.
"""
import argparse
import os
import hashlib
import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions


def pair(text):
    name, sep, value = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected name:value, got {text!r}")
    return (name.strip().lower(), value.strip())


def decode(headers):
    out = []
    for name, value in headers:
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        out.append([name, value])
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("addr")
    p.add_argument("--method", default="GET")
    p.add_argument("--path", default="/")
    p.add_argument("--authority", default=None)
    p.add_argument("--header", type=pair, action="append", default=[])
    p.add_argument("--body-file", default=None)
    p.add_argument("--trailer", type=pair, action="append", default=[])
    p.add_argument("--out", default=None)
    p.add_argument("--wait", type=float, default=30.0)
    p.add_argument("--body-gate", default=None,
                   help="send the body only once this file exists (the head goes first)")
    args = p.parse_args()

    host, _, port = args.addr.rpartition(":")
    body = b""
    if args.body_file:
        with open(args.body_file, "rb") as f:
            body = f.read()
    try:
        sock = socket.create_connection((host, int(port)), timeout=10)
    except OSError as e:
        print(f"connect to {args.addr}: {e}", file=sys.stderr)
        return 2
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())

    request = [
        (":method", args.method),
        (":scheme", "http"),
        (":authority", args.authority or args.addr),
        (":path", args.path),
    ] + args.header
    sid = conn.get_next_available_stream_id()
    end_after_headers = not body and not args.trailer
    conn.send_headers(sid, request, end_stream=end_after_headers)
    sock.sendall(conn.data_to_send())

    result = {
        "status": None,
        "headers": [],
        "trailers": [],
        "body_len": 0,
        "body_sha1": None,
        "reset": None,
        "goaway": None,
        "complete": False,
        "timed_out": False,
        "closed": False,
    }
    received = bytearray()
    sent = 0
    request_done = end_after_headers
    deadline = time.monotonic() + args.wait
    sock.settimeout(0.05)

    def handle(events):
        nonlocal request_done
        for ev in events:
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                hs = decode(ev.headers)
                result["headers"] = hs
                for n, v in hs:
                    if n == ":status":
                        result["status"] = int(v)
            elif isinstance(ev, h2.events.InformationalResponseReceived):
                pass
            elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == sid:
                result["trailers"] = decode(ev.headers)
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                received.extend(ev.data)
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                result["complete"] = True
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                result["reset"] = int(ev.error_code)
                request_done = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                result["goaway"] = int(ev.error_code)
                request_done = True

    closed = False
    pending = b""
    while True:
        # Send what the windows allow of the body, then the trailers or END_STREAM.
        gated = args.body_gate is not None and not os.path.exists(args.body_gate)
        if not request_done and not closed and not gated:
            try:
                while sent < len(body):
                    window = min(
                        conn.local_flow_control_window(sid), conn.max_outbound_frame_size
                    )
                    if window <= 0:
                        break
                    chunk = body[sent : sent + window]
                    conn.send_data(sid, chunk)
                    sent += len(chunk)
                if sent >= len(body):
                    if args.trailer:
                        conn.send_headers(sid, args.trailer, end_stream=True)
                    else:
                        conn.end_stream(sid)
                    request_done = True
            except h2.exceptions.StreamClosedError:
                request_done = True
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        if result["complete"] or result["reset"] is not None or result["goaway"] is not None:
            break
        if closed:
            break
        if time.monotonic() >= deadline:
            result["timed_out"] = True
            try:
                conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                sock.sendall(conn.data_to_send())
                # Give the peer a moment to read the reset before the close.
                sock.settimeout(0.5)
                try:
                    sock.recv(65536)
                except OSError:
                    pass
            except Exception:
                pass
            break
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            closed = True
            continue
        if not data:
            closed = True
            continue
        # Fed one frame at a time: the h2 library treats a GOAWAY as the end and refuses
        # what follows it in the same read (a graceful close's PING), which would lose the
        # GOAWAY's own event.
        pending += data
        try:
            while len(pending) >= 9:
                size = 9 + int.from_bytes(pending[0:3], "big")
                if len(pending) < size:
                    break
                frame, pending = pending[:size], pending[size:]
                handle(conn.receive_data(frame))
        except h2.exceptions.ProtocolError as e:
            print(f"protocol error from the peer: {e}", file=sys.stderr)
            closed = True
        out = conn.data_to_send()
        if out:
            try:
                sock.sendall(out)
            except OSError:
                closed = True
    try:
        conn.close_connection()
        sock.sendall(conn.data_to_send())
    except Exception:
        pass
    sock.close()
    result["closed"] = closed
    result["body_len"] = len(received)
    result["body_sha1"] = hashlib.sha1(bytes(received)).hexdigest()
    if args.out:
        with open(args.out, "wb") as f:
            f.write(received)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
