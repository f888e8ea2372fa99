#!/usr/bin/env python3
"""A plaintext-to-TLS bridge for conformance suites that speak only cleartext (httpwg):
listens on 127.0.0.1 (port printed on stdout), and carries each connection to the target over
TLS with ALPN h2, verifying it against a CA; exits if the negotiated protocol is not h2.

  tls_bridge.py TARGET_PORT CA_FILE SERVER_NAME
"""
import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    port, ca, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["h2"])

    async def handle(cr, cw):
        try:
            tr, tw = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname=name)
        except Exception as e:
            print(f"bridge: connect failed: {e}", file=sys.stderr, flush=True)
            cw.close()
            return
        proto = tw.get_extra_info("ssl_object").selected_alpn_protocol()
        if proto != "h2":
            print(f"bridge: ALPN gave {proto!r}, not h2", file=sys.stderr, flush=True)
            cw.close()
            tw.close()
            return
        await asyncio.gather(pipe(cr, tw), pipe(tr, cw))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
