#!/usr/bin/env python3
"""User memory per idle WebSocket (echo endpoint) beside an idle HTTP/1.1 keep-alive connection.

Starts `coreplex run` (one shard) with an echo route at /echo and a direct response elsewhere,
opens 200 warm-up connections, then N more: each WebSocket completes its upgrade and one echo
round trip of a 2,000-byte text (compressed where permessage-deflate is offered: without
context takeover, or with the client keeping a 2^10 or 2^15 window, which the server then keeps
too), each HTTP connection one request; then it idles. User memory per connection = growth
of the server's RSS over the N / N. One server per mode, cleaned up by PID.

With --pings N, every WebSocket then sends N pings 1 s apart and reads its pongs before the
measurement (connections held with pings).

Usage: python3 bench/ws_idle_mem.py [--count 10000] [--pings 0] [--modes websocket,...]
"""
import argparse, base64, os, resource, socket, subprocess, sys, tempfile, time, zlib

CONFIG = """version = 1
[global]
shards = 1
max_connections = 19500
[admin]
bind = "127.0.0.1:0"
[[listener]]
name = "ws"
bind = "127.0.0.1:{port}"
[[listener.route]]
path = "/echo"
websocket = "echo"
[[listener.route]]
path_prefix = "/"
respond = {{ body = "ok" }}
"""


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024


# permessage-deflate offers per mode: the client keeps context (the server keeps its window of
# 2^bits plaintext bytes) or not (the server keeps nothing).
OFFERS = {
    "deflate-15": "permessage-deflate; client_max_window_bits=15",
    "deflate-10": "permessage-deflate; client_max_window_bits=10",
    "deflate-nct": "permessage-deflate; client_no_context_takeover",
}


def open_one(port, mode):
    s = socket.create_connection(("127.0.0.1", port))
    if mode != "http":
        key = base64.b64encode(os.urandom(16)).decode()
        ext = f"Sec-WebSocket-Extensions: {OFFERS[mode]}\r\n" if mode in OFFERS else ""
        s.sendall(f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n".encode())
        mask = b"\x01\x02\x03\x04"
        payload, first = b"hi" * 1000, 0x81
        if mode in OFFERS:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload, first = (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH))[:-4], 0xC1
        head = bytes([first, 0x80 | 126]) + len(payload).to_bytes(2, "big") if len(payload) > 125 else bytes([first, 0x80 | len(payload)])
        s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    else:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    return s


def ping_all(conns, rounds):
    """Each connection sends a (masked) ping and reads its pong, `rounds` times, 1 s apart."""
    mask = b"\x05\x06\x07\x08"
    ping = b"\x89\x84" + mask + bytes(b ^ mask[i] for i, b in enumerate(b"ping"))
    for _ in range(rounds):
        for s in conns:
            s.sendall(ping)
        for s in conns:
            s.recv(64)
        time.sleep(1)


def measure(binary, port, mode, count, pings):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(CONFIG.format(port=port))
    server = subprocess.Popen([binary, "run", "-c", f.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        warm = [open_one(port, mode) for _ in range(200)]
        for s in warm:
            s.recv(65536)
        time.sleep(1)
        base = rss(server.pid)
        conns = [open_one(port, mode) for _ in range(count)]
        for s in conns:
            s.recv(65536)
        time.sleep(2)
        if pings and mode != "http":
            ping_all(conns, pings)
        grown = rss(server.pid) - base
        held = f", after {pings} rounds of pings" if pings and mode != "http" else ""
        print(f"{mode:11} {count} idle connections{held}: {grown / count:.0f} B per connection (RSS +{grown} B)")
        for s in warm + conns:
            s.close()
    finally:
        server.kill()
        server.wait()
        os.unlink(f.name)


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--count", type=int, default=10000)
    a.add_argument("--bin", default="target/release/coreplex")
    a.add_argument("--port", type=int, default=9101)
    a.add_argument("--pings", type=int, default=0, help="rounds of client pings before measuring")
    a.add_argument("--modes", default="websocket,deflate-nct,deflate-10,deflate-15,http")
    args = a.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.count + 1000), hard))
    for i, mode in enumerate(args.modes.split(",")):
        measure(args.bin, args.port + i, mode, args.count, args.pings)


if __name__ == "__main__":
    sys.exit(main())
