#!/usr/bin/env python3
"""A recording HTTP/2 (h2c) upstream with the Python `h2` library, one thread per connection.

    h2_server.py --mode hang|echo|goaway|refuse

Binds 127.0.0.1:0 and prints `PORT <n>` first. Then one JSON object per line, flushed, for
what it sees: {"event": "request", "conn", "stream", "headers"} when a request's headers
arrive, {"event": "reset", "conn", "stream", "code"} when the peer resets a stream,
{"event": "end", "conn", "stream", "body_len", "trailers"} when a request body ends.

Modes: `hang` never answers (a test of deadlines watches the reset come); `echo` answers
200 with the request body and, as trailers, `x-body-len` and every request trailer;
`goaway` answers a connection's first request with GOAWAY(NO_ERROR, last stream 0) and
closes it (the request was never processed); `refuse` resets every request with
REFUSED_STREAM (never processed either); `refuse-first` resets the first request it sees
with REFUSED_STREAM and echoes the others.
`--max-streams K` advertises SETTINGS_MAX_CONCURRENT_STREAMS = K in its first SETTINGS
and refuses (REFUSED_STREAM) a stream that would be the K+1th open one on its connection,
even before the client acknowledged the setting; `--gather N` (with
`echo`) holds every answer until N request bodies have ended, over all connections, then
sends them all: N requests are answered only if N streams can be open at once.
Runs until killed.
"""
import argparse
import json
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

LOCK = threading.Lock()
# Set once `refuse-first` refused its request.
REFUSED_ONE = threading.Event()
# `--gather`: requests ended so far, and set once there are enough to answer them all.
ENDED = [0]
GATHERED = threading.Event()


def emit(obj):
    with LOCK:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def decode(headers):
    return [
        [n.decode("latin-1") if isinstance(n, bytes) else n,
         v.decode("latin-1") if isinstance(v, bytes) else v]
        for n, v in headers
    ]


def serve(sock, conn_id, mode, max_streams, gather):
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    if max_streams:
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams},
        )
    conn.initiate_connection()
    if max_streams:
        # Advertised, but enforced here (a REFUSED_STREAM, as servers do) rather than by
        # the library (which fails the whole connection).
        conn.local_settings = h2.settings.Settings(client=False)
    if gather:
        sock.settimeout(0.02)
    sock.sendall(conn.data_to_send())
    bodies = {}
    trailers = {}
    refused = set()
    done = set()  # streams answered or reset
    pending = {}  # stream -> bytes still to send (echo)

    def flush_pending():
        if gather and not GATHERED.is_set():
            return
        for sid in list(pending):
            data, tr = pending[sid]
            try:
                while data:
                    window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                    if window <= 0:
                        break
                    conn.send_data(sid, data[:window])
                    data = data[window:]
                if not data:
                    conn.send_headers(sid, tr, end_stream=True)
                    del pending[sid]
                    done.add(sid)
                else:
                    pending[sid] = (data, tr)
            except h2.exceptions.StreamClosedError:
                del pending[sid]
                done.add(sid)

    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            flush_pending()
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
            continue
        except OSError:
            break
        if not data:
            break
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            emit({"event": "protocol-error", "conn": conn_id, "error": str(e)})
            sock.sendall(conn.data_to_send())
            break
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                bodies[ev.stream_id] = bytearray()
                emit({"event": "request", "conn": conn_id, "stream": ev.stream_id,
                      "headers": decode(ev.headers)})
                if mode == "goaway":
                    conn.close_connection(error_code=0, last_stream_id=0)
                    sock.sendall(conn.data_to_send())
                    sock.close()
                    return
                open_now = len([sid for sid in bodies if sid not in refused and sid not in done])
                over = max_streams and open_now > max_streams
                refuse_first = mode == "refuse-first" and not REFUSED_ONE.is_set()
                if refuse_first:
                    REFUSED_ONE.set()
                if mode == "refuse" or refuse_first or over:
                    refused.add(ev.stream_id)
                    conn.reset_stream(ev.stream_id, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
            elif isinstance(ev, h2.events.DataReceived):
                bodies.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                try:
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                except h2.exceptions.StreamClosedError:
                    pass
            elif isinstance(ev, h2.events.TrailersReceived):
                trailers[ev.stream_id] = decode(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded):
                body = bytes(bodies.get(ev.stream_id, b""))
                tr = trailers.get(ev.stream_id, [])
                emit({"event": "end", "conn": conn_id, "stream": ev.stream_id,
                      "body_len": len(body), "trailers": tr})
                echoes = mode == "echo" or mode == "refuse-first"
                if echoes and ev.stream_id in bodies and ev.stream_id not in refused:
                    conn.send_headers(ev.stream_id, [(":status", "200"),
                                                     ("content-type", "application/octet-stream")])
                    out_tr = [("x-body-len", str(len(body)))] + [(n, v) for n, v in tr]
                    pending[ev.stream_id] = (body, out_tr)
                    if gather:
                        with LOCK:
                            ENDED[0] += 1
                            if ENDED[0] >= gather:
                                GATHERED.set()
            elif isinstance(ev, h2.events.StreamReset):
                done.add(ev.stream_id)
                emit({"event": "reset", "conn": conn_id, "stream": ev.stream_id,
                      "code": int(ev.error_code)})
                pending.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                emit({"event": "goaway", "conn": conn_id, "code": int(ev.error_code)})
        flush_pending()
        out = conn.data_to_send()
        if out:
            try:
                sock.sendall(out)
            except OSError:
                break
    sock.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["hang", "echo", "goaway", "refuse", "refuse-first"], default="echo")
    p.add_argument("--max-streams", type=int, default=0)
    p.add_argument("--gather", type=int, default=0)
    args = p.parse_args()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    n = 0
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve, args=(sock, n, args.mode, args.max_streams, args.gather), daemon=True).start()
        n += 1


if __name__ == "__main__":
    main()
