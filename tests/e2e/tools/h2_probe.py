#!/usr/bin/env python3
"""Raw HTTP/2 client for the end-to-end tests (hyperframe + hpack, no state machine of ours).

  h2_probe.py floods HOST PORT        each flood class on its own connection: prints
                                      "<class> goaway <code>" or "<class> none"
  h2_probe.py bomb HOST PORT          an HPACK bomb: prints each stream's status
  h2_probe.py halfclose HOST PORT PATH one GET, then shuts down its sending side: prints the
                                      status and body length received before the close
  h2_probe.py trickle HOST PORT       one request, then a PING every 200 ms: when it is closed
  h2_probe.py shutdown-noack HOST PORT  as shutdown, never answering PINGs
  h2_probe.py noread HOST PORT PATH   100 requests held by the connection window, then one
                                      WINDOW_UPDATE opening it; never reads (holds 3 s)
  h2_probe.py request HOST PORT PATH  one GET with prior knowledge: prints status and body length
  h2_probe.py abort HOST PORT PATH NEXT  GET PATH, RST_STREAM(CANCEL) after its first DATA
                                      ("reset after N"), then GET NEXT on the same
                                      connection ("next <status> <body length>")
  h2_probe.py settings HOST PORT      prints the server's SETTINGS as name=value lines
  h2_probe.py shutdown HOST PORT      one request, prints "ready", then reports the GOAWAYs it
                                      gets (acking PINGs) and "closed" at EOF
  h2_probe.py idle HOST PORT          one request, then waits: prints "goaway <code>" and
                                      "closed" with the seconds it took
"""
import socket
import sys
import time

from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CODES = {0: "no_error", 1: "protocol_error", 3: "flow_control_error", 6: "frame_size_error",
         9: "compression_error", 11: "enhance_your_calm"}


def connect(host, port):
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(PREFACE + SettingsFrame(0).serialize())
    return s


def read_frames(s, buf):
    """Reads what is available; returns (frames, rest, eof)."""
    try:
        data = s.recv(65536)
    except socket.timeout:
        return [], buf, False
    except ConnectionResetError:
        return [], buf, True
    if not data:
        return [], buf, True
    buf += data
    frames = []
    while len(buf) >= 9:
        f, length = Frame.parse_frame_header(memoryview(buf[:9]))
        if len(buf) < 9 + length:
            break
        f.parse_body(memoryview(buf[9:9 + length]))
        frames.append(f)
        buf = buf[9 + length:]
    return frames, buf, False


def request_headers(enc, path="/"):
    return enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "localhost"),
                       (":path", path)])


def wait_goaway(s, deadline=5.0):
    """Reads until a GOAWAY or EOF; returns its code name or None."""
    buf = b""
    end = time.time() + deadline
    s.settimeout(0.5)
    while time.time() < end:
        frames, buf, eof = read_frames(s, buf)
        for f in frames:
            if isinstance(f, GoAwayFrame):
                return CODES.get(f.error_code, str(f.error_code))
        if eof:
            return None
    return None


def send_all(s, data):
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def floods(host, port):
    enc = Encoder()
    classes = {}

    def rst():
        out = b""
        for i in range(1000):
            sid = 2 * i + 1
            h = HeadersFrame(sid, request_headers(enc))
            h.flags.add("END_HEADERS")
            out += h.serialize() + RstStreamFrame(sid, error_code=8).serialize()
        return out

    def continuation():
        h = HeadersFrame(1, request_headers(Encoder()))
        out = h.serialize()
        for _ in range(2000):
            out += ContinuationFrame(1, b"").serialize()
        return out

    def ping():
        return b"".join(PingFrame(0, b"12345678").serialize() for _ in range(20000))

    def settings():
        return b"".join(SettingsFrame(0).serialize() for _ in range(20000))

    def empty_data():
        h = HeadersFrame(1, request_headers(Encoder()))
        h.flags.add("END_HEADERS")
        return h.serialize() + b"".join(DataFrame(1, b"").serialize() for _ in range(20000))

    def window_update():
        return b"".join(WindowUpdateFrame(0, 1).serialize() for _ in range(20000))

    for name, make in [("rapid_reset", rst), ("continuation", continuation), ("ping", ping),
                       ("settings", settings), ("empty_data", empty_data),
                       ("window_update", window_update)]:
        enc = Encoder()
        s = connect(host, port)
        send_all(s, make())
        code = wait_goaway(s)
        print(f"{name} goaway {code}" if code else f"{name} none", flush=True)
        s.close()


def bomb(host, port):
    """An HPACK bomb: one 4 KB table entry referenced 16,000 times (64 MB decoded) in the
    second request. Prints each stream's status."""
    e = Encoder()
    first = e.encode([(":method", "GET"), (":scheme", "http"), (":authority", "a"),
                      (":path", "/"), ("x-bomb", "a" * 4000)])
    h = HeadersFrame(1, first, flags=["END_HEADERS", "END_STREAM"])
    block = e.encode([(":method", "GET"), (":scheme", "http"), (":authority", "a"),
                      (":path", "/")]) + bytes([0xbe]) * 16000
    h2 = HeadersFrame(3, block, flags=["END_HEADERS", "END_STREAM"])
    s = connect(host, port)
    s.sendall(h.serialize() + h2.serialize())
    from hpack import Decoder
    dec = Decoder()
    buf = b""
    s.settimeout(5)
    seen = 0
    while seen < 2:
        frames, buf, eof = read_frames(s, buf)
        for f in frames:
            if isinstance(f, HeadersFrame):
                print(f"stream {f.stream_id} status {dict(dec.decode(f.data)).get(':status')}")
                seen += 1
            if isinstance(f, GoAwayFrame):
                print(f"goaway {CODES.get(f.error_code, f.error_code)}")
                return
        if eof:
            print("closed")
            return


def one_request(s, path="/"):
    enc = Encoder()
    h = HeadersFrame(1, request_headers(enc, path), flags=["END_HEADERS", "END_STREAM"])
    s.sendall(h.serialize())
    buf = b""
    body = 0
    status = None
    s.settimeout(5)
    from hpack import Decoder
    dec = Decoder()
    while True:
        frames, buf, eof = read_frames(s, buf)
        for f in frames:
            if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                s.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
            if isinstance(f, HeadersFrame) and f.stream_id == 1:
                status = dict(dec.decode(f.data)).get(":status")
            if isinstance(f, DataFrame) and f.stream_id == 1:
                body += len(f.data)
                if f.data:
                    s.sendall(WindowUpdateFrame(0, len(f.data)).serialize()
                              + WindowUpdateFrame(1, len(f.data)).serialize())
            if f.stream_id == 1 and "END_STREAM" in f.flags:
                return status, body
        if eof:
            return status, body


def follow(s, started, ack_pings=True):
    """Reports GOAWAYs (and the close) until EOF, answering PINGs when `ack_pings`."""
    buf = b""
    s.settimeout(0.5)
    while time.time() - started < 20:
        frames, buf, eof = read_frames(s, buf)
        for f in frames:
            if isinstance(f, GoAwayFrame):
                print(f"goaway {CODES.get(f.error_code, f.error_code)} last {f.last_stream_id} "
                      f"after {time.time() - started:.1f}", flush=True)
            if ack_pings and isinstance(f, PingFrame) and "ACK" not in f.flags:
                s.sendall(PingFrame(0, f.opaque_data, flags=["ACK"]).serialize())
        if eof:
            print(f"closed after {time.time() - started:.1f}", flush=True)
            return


def main():
    cmd, host, port = sys.argv[1], sys.argv[2], sys.argv[3]
    if cmd == "floods":
        floods(host, port)
    elif cmd == "bomb":
        bomb(host, port)
    elif cmd == "trickle":
        # One request, then a PING every 200 ms: reports when the server closes.
        s = connect(host, port)
        one_request(s)
        started = time.time()
        s.settimeout(0.2)
        buf = b""
        next_ping = 0.0
        while time.time() - started < 10:
            if time.time() >= next_ping:
                next_ping = time.time() + 0.2
                try:
                    s.sendall(PingFrame(0, b"tricklee").serialize())
                except OSError:
                    pass
            frames, buf, eof = read_frames(s, buf)
            for f in frames:
                if isinstance(f, GoAwayFrame):
                    print(f"goaway {CODES.get(f.error_code, f.error_code)} after {time.time() - started:.1f}", flush=True)
            if eof:
                print(f"closed after {time.time() - started:.1f}", flush=True)
                break
    elif cmd == "shutdown-noack":
        # As shutdown, but never answers PINGs.
        s = connect(host, port)
        one_request(s)
        print("ready", flush=True)
        follow(s, time.time(), ack_pings=False)
    elif cmd == "noread":
        # Huge windows, 100 requests for PATH, and never a read: prints "sent", holds 3 s.
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((host, int(port)))
        enc = Encoder()
        # Stream windows wide open, the connection window not yet: every response waits for
        # it. Then one WINDOW_UPDATE opens it for all of them at once.
        out = PREFACE + SettingsFrame(0, settings={4: (1 << 31) - 1}).serialize()
        for i in range(100):
            out += HeadersFrame(2 * i + 1, request_headers(enc, sys.argv[4]),
                                flags=["END_HEADERS", "END_STREAM"]).serialize()
        s.sendall(out)
        time.sleep(0.3)
        s.sendall(WindowUpdateFrame(0, (1 << 31) - 1 - 65535).serialize())
        print("sent", flush=True)
        time.sleep(3)
    elif cmd == "halfclose":
        # A small receive buffer and a pause before reading: the server still has most of the
        # body to send when it sees the FIN.
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(5)
        s.connect((host, int(port)))
        s.sendall(PREFACE + SettingsFrame(0).serialize())
        enc = Encoder()
        h = HeadersFrame(1, request_headers(enc, sys.argv[4]), flags=["END_HEADERS", "END_STREAM"])
        # A window large enough for the whole body, so no WINDOW_UPDATE is needed after the FIN.
        s.sendall(SettingsFrame(0, settings={4: 1 << 24}).serialize()
                  + WindowUpdateFrame(0, 1 << 24).serialize() + h.serialize())
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.3)
        from hpack import Decoder
        dec = Decoder()
        buf, body, status = b"", 0, None
        s.settimeout(5)
        while True:
            frames, buf, eof = read_frames(s, buf)
            for f in frames:
                if isinstance(f, HeadersFrame) and f.stream_id == 1:
                    status = dict(dec.decode(f.data)).get(":status")
                if isinstance(f, DataFrame) and f.stream_id == 1:
                    body += len(f.data)
            if eof:
                break
        print(f"status {status} body {body}")
    elif cmd == "abort":
        s = connect(host, port)
        enc = Encoder()
        from hpack import Decoder
        dec = Decoder()
        s.sendall(HeadersFrame(1, request_headers(enc, sys.argv[4]),
                               flags=["END_HEADERS", "END_STREAM"]).serialize())
        buf, got, reset = b"", 0, False
        s.settimeout(5)
        status, body = None, 0
        while True:
            frames, buf, eof = read_frames(s, buf)
            for f in frames:
                if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                    s.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
                if isinstance(f, DataFrame) and f.stream_id == 1 and not reset:
                    got += len(f.data)
                    reset = True
                    print(f"reset after {got}", flush=True)
                    s.sendall(RstStreamFrame(1, error_code=8).serialize()
                              + WindowUpdateFrame(0, 1 << 20).serialize()
                              + HeadersFrame(3, request_headers(enc, sys.argv[5]),
                                             flags=["END_HEADERS", "END_STREAM"]).serialize())
                if isinstance(f, HeadersFrame) and f.stream_id == 3:
                    status = dict(dec.decode(f.data)).get(":status")
                elif isinstance(f, HeadersFrame):
                    dec.decode(f.data)  # keep the HPACK table in step
                if isinstance(f, DataFrame) and f.stream_id == 3:
                    body += len(f.data)
                if f.stream_id == 3 and "END_STREAM" in f.flags:
                    print(f"next {status} {body}", flush=True)
                    return
            if eof:
                print(f"closed; next {status} {body}", flush=True)
                return
    elif cmd == "request":
        s = connect(host, port)
        status, body = one_request(s, sys.argv[4] if len(sys.argv) > 4 else "/")
        print(f"status {status} body {body}")
    elif cmd == "settings":
        s = connect(host, port)
        buf = b""
        s.settimeout(5)
        while True:
            frames, buf, eof = read_frames(s, buf)
            for f in frames:
                if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                    names = {1: "header_table_size", 3: "max_concurrent_streams",
                             4: "initial_window_size", 5: "max_frame_size",
                             6: "max_header_list_size", 8: "enable_connect_protocol"}
                    for k, v in f.settings.items():
                        print(f"{names.get(k, k)}={v}")
                    return
            if eof:
                return
    elif cmd == "shutdown":
        s = connect(host, port)
        one_request(s)
        print("ready", flush=True)
        follow(s, time.time())
    elif cmd == "idle":
        s = connect(host, port)
        one_request(s)
        follow(s, time.time())


if __name__ == "__main__":
    main()
