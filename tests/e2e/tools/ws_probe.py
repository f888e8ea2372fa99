#!/usr/bin/env python3
"""WebSocket probes against a coreplex echo endpoint, for tests/e2e/websocket.rs.

  ws_probe.py echo HOST PORT PATH          the Python `websockets` client: messages echoed
  ws_probe.py close HOST PORT PATH CODE    send a close with CODE, print the close received
  ws_probe.py raw HOST PORT PATH HEX       handshake by hand, send HEX (masking applied to
                                           frames written as `F:<opcode>:<fin>:<hex payload>`,
                                           `|`-separated; `R:<hex>` is sent as it is), print
                                           every frame received and `eof`
  ws_probe.py idle HOST PORT PATH          wait for the server to close, print its close
  ws_probe.py alive HOST PORT PATH         `websockets` (which answers pings) silent for 1.5 s,
                                           then one echo
  ws_probe.py deflate HOST PORT PATH       `websockets` with permessage-deflate (the client
                                           keeping context): messages echoed, compressed
  ws_probe.py packed HOST PORT PATH KIND   offer permessage-deflate by hand and send one
                                           compressed text: KIND `bomb` (20 MiB of zeros),
                                           `corrupt` (not deflate) or `badutf8`; print frames
Each prints one line per observation; a failed check exits 1.
"""
import asyncio, base64, os, socket, struct, sys

import websockets


def fail(msg):
    print("FAIL", msg)
    sys.exit(1)


async def echo(uri):
    async with websockets.connect(uri, compression=None, max_size=None, ping_interval=None) as ws:
        for msg in ["hello", "κόσμε €𝄞", "", b"", b"\x00\xff" * 100_000, "x" * 70_000]:
            await ws.send(msg)
            got = await ws.recv()
            if got != msg:
                fail(f"echo of {type(msg).__name__} of {len(msg)}: got {len(got)}")
        print("ok messages")
        await ws.send(["frag ", "men", "ted €"])
        if await ws.recv() != "frag mented €":
            fail("fragmented")
        await ws.send([b"ab", b"", b"cd"])
        if await ws.recv() != b"abcd":
            fail("fragmented binary")
        print("ok fragmented")
        pong = await ws.ping(b"probe")
        await asyncio.wait_for(pong, 5)
        print("ok ping")
        # Many messages in flight before reading any echo.
        for i in range(1000):
            await ws.send(f"m{i}")
        for i in range(1000):
            if await ws.recv() != f"m{i}":
                fail(f"pipelined {i}")
        print("ok pipelined")
    print("closed", ws.close_code)


async def deflate(uri):
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    factory = ClientPerMessageDeflateFactory(client_max_window_bits=True)
    async with websockets.connect(uri, extensions=[factory], compression=None, max_size=None) as ws:
        print("extensions", ws.response.headers.get("Sec-WebSocket-Extensions"))
        small = ws.response.headers.get("Sec-WebSocket-Extensions") is None
        sent = ["κόσμε " * 2000, "κόσμε " * 2000, b"\x00" * (1 << 20), "", "x", "x" * 40_000]
        if small:  # the listener declined compression: it may also take only small messages
            sent = ["κόσμε " * 10, "", "x"]
        for msg in sent:
            await ws.send(msg)
            if await ws.recv() != msg:
                fail(f"echo of {len(msg)}")
        await ws.send(["frag " * 10, "ment " * 10])
        if await ws.recv() != "frag " * 10 + "ment " * 10:
            fail("fragmented")
        print("ok compressed" if not small else "ok uncompressed")
    print("closed", ws.close_code)


def packed(host, port, path, kind):
    import zlib
    s, rest = handshake(host, port, path, "permessage-deflate; client_no_context_takeover")
    if kind == "bomb":
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        payload = c.compress(b"\x00" * (20 << 20)) + c.flush(zlib.Z_SYNC_FLUSH)
        payload = payload[:-4]
    elif kind == "corrupt":
        payload = b"\xff\xff\xff\xff\xff\xff"
    else:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = (c.compress(b"ok \xc0\xaf") + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    s.sendall(frame(1, True, payload, rsv1=True))
    read_frames(s, rest)


async def alive(uri):
    async with websockets.connect(uri, compression=None, ping_interval=None) as ws:
        await asyncio.sleep(1.5)
        await ws.send("still here")
        if await ws.recv() != "still here":
            fail("echo after silence")
        print("ok alive")


async def close(uri, code):
    async with websockets.connect(uri, compression=None) as ws:
        await ws.close(code, "bye")
    print("closed", ws.close_code, ws.close_reason)


def handshake(host, port, path, extensions=None):
    s = socket.create_connection((host, port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    ext = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            fail("no 101")
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        fail(f"not 101: {head!r}")
    if extensions and b"permessage-deflate" not in head:
        fail(f"permessage-deflate not accepted: {head!r}")
    return s, rest


def frame(opcode, fin, payload, mask=b"\x11\x22\x33\x44", rsv1=False):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        h = bytes([b0, 0x80 | n])
    elif n < 65536:
        h = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        h = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    return h + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frames(s, rest):
    buf = rest
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            chunk = b""
        if not chunk:
            break
        buf += chunk
    at = 0
    while len(buf) - at >= 2:
        b0, b1 = buf[at], buf[at + 1]
        n, at = b1 & 0x7F, at + 2
        if b1 & 0x80:
            fail("a masked server frame")
        if n == 126:
            n, at = struct.unpack(">H", buf[at:at + 2])[0], at + 2
        elif n == 127:
            n, at = struct.unpack(">Q", buf[at:at + 8])[0], at + 8
        payload, at = buf[at:at + n], at + n
        op = b0 & 0x0F
        if op == 8:
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
            print("close", code, payload[2:].decode())
        else:
            hexed = payload.hex() if len(payload) <= 64 else f"{payload[:32].hex()}...({len(payload)} bytes)"
            print("frame", op, ("rsv1 " if b0 & 0x40 else "") + ("fin" if b0 & 0x80 else "more"), hexed)
    print("eof")


def raw(host, port, path, spec):
    s, rest = handshake(host, port, path)
    for part in filter(None, spec.split("|")):
        if part.startswith("R:"):
            s.sendall(bytes.fromhex(part[2:]))
        else:
            _, op, fin, hexp = part.split(":")
            s.sendall(frame(int(op), fin == "1", bytes.fromhex(hexp)))
    read_frames(s, rest)


def idle(host, port, path):
    s, rest = handshake(host, port, path)
    s.settimeout(30)
    read_frames(s, rest)


def main():
    mode, host, port, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    uri = f"ws://{host}:{port}{path}"
    if mode == "echo":
        asyncio.run(echo(uri))
    elif mode == "close":
        asyncio.run(close(uri, int(sys.argv[5])))
    elif mode == "raw":
        raw(host, port, path, sys.argv[5])
    elif mode == "idle":
        idle(host, port, path)
    elif mode == "alive":
        asyncio.run(alive(uri))
    elif mode == "deflate":
        asyncio.run(deflate(uri))
    elif mode == "packed":
        packed(host, port, path, sys.argv[5])
    else:
        fail(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
