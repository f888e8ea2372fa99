#!/usr/bin/env python3
"""Backends for the upgrade-tunnel tests (tests/e2e/tunnel.rs), on 127.0.0.1, a free port
printed as `port N` once listening.

  ws_backend.py ws     the Python `websockets` echo server (every message echoed; prints
                       `closed CODE` as each connection ends, and `deflate` for an offer of
                       permessage-deflate, which it never accepts)
  ws_backend.py raw    a hand-written HTTP/1.1 server for upgrades of any protocol:
      Upgrade asked, path .../refuse  403 `refused` (Content-Length), keep-alive
      Upgrade asked, path .../hangup  101, then the connection closes
      Upgrade asked, path .../early   101 and `early` right behind its head, then as below
      Upgrade asked (any other path)  101 with the asked Upgrade, then every byte echoed; at
                                      the client's FIN `bye` is sent, then our FIN
      no Upgrade                      200 `upgrade=none` (keep-alive)
Each connection accepted prints `conn`; the process runs until it is killed.
"""
import asyncio, sys

import websockets


async def ws_main():
    async def echo(ws):
        print("conn", flush=True)
        if ws.request.headers.get("Sec-WebSocket-Extensions"):
            print("deflate", flush=True)
        try:
            async for msg in ws:
                await ws.send(msg)
        finally:
            print("closed", ws.close_code, flush=True)

    async with websockets.serve(echo, "127.0.0.1", 0, compression=None, max_size=None) as srv:
        print("port", srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
    return path, fields


async def raw_conn(reader, writer):
    print("conn", flush=True)
    try:
        while True:
            try:
                path, fields = await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            upgrade = fields.get("upgrade")
            asked = upgrade and "upgrade" in fields.get("connection", "").lower()
            if not asked:
                body = b"upgrade=none"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                continue
            if path.endswith("/refuse"):
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\nrefused")
                await writer.drain()
                continue
            writer.write(
                f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: {upgrade}\r\n"
                "Connection: Upgrade\r\n\r\n".encode()
            )
            if path.endswith("/hangup"):
                await writer.drain()
                return
            if path.endswith("/early"):
                writer.write(b"early")
            await writer.drain()
            while True:
                data = await reader.read(65536)
                if not data:
                    writer.write(b"bye")
                    await writer.drain()
                    writer.write_eof()
                    # Wait for the proxy to close its side.
                    await reader.read(1)
                    return
                writer.write(data)
                await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def raw_main():
    srv = await asyncio.start_server(raw_conn, "127.0.0.1", 0)
    print("port", srv.sockets[0].getsockname()[1], flush=True)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(ws_main() if sys.argv[1] == "ws" else raw_main())
