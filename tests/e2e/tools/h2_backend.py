#!/usr/bin/env python3
"""An HTTP/2 backend for the e2e tests, on the Python `h2` library (an independent HTTP/2
implementation): h2c with prior knowledge, or TLS with ALPN h2 when given a certificate.

    h2_backend.py PORT [--max-streams N] [--goaway-after N] [--refuse-every N]
                       [--cert FILE --key FILE]

Prints "ready PORT" once listening. Paths:
  /echo        the request's fields as "name: value" lines (pseudo-fields included)
  /upload      reads the body, answers its length
  /bytes/N     N bytes of "b"
  /nolength/N  N bytes of "n" without content-length (the body ends with the stream)
  /slow/MS     answers "slow" after MS milliseconds
  /peak        the most streams ever open at once on one connection, the streams seen, the
               violations, refusals, connections and resets received, the most connections
               open at once (one line)
  anything     "h2 ok PATH"
--max-streams: SETTINGS_MAX_CONCURRENT_STREAMS; a stream beyond it is a protocol violation
  the backend counts (and refuses), so /peak can prove the proxy never sent one.
--goaway-after N: after N streams on a connection, GOAWAY(last = the Nth) and close once those
  are answered; streams above it are left unprocessed.
--refuse-every N: every Nth stream is reset with REFUSED_STREAM before it is processed.
"""

import asyncio
import ssl
import struct
import sys

import h2.config
import h2.connection
import h2.events
import h2.errors

ARGS = sys.argv[1:]
PORT = int(ARGS[0])


def opt(name, default=None):
    if name in ARGS:
        return ARGS[ARGS.index(name) + 1]
    return default


MAX_STREAMS = int(opt("--max-streams", "100"))
GOAWAY_AFTER = int(opt("--goaway-after", "0"))
REFUSE_EVERY = int(opt("--refuse-every", "0"))
CERT, KEY = opt("--cert"), opt("--key")

STATS = {"peak": 0, "streams": 0, "violations": 0, "refused": 0, "connections": 0, "resets": 0,
         "open": 0, "conn_peak": 0}


class Conn:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        cfg = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.bodies = {}
        self.heads = {}
        self.open = set()
        self.count = 0
        self.last_ok = None  # after GOAWAY: the last stream processed
        self.pending = {}  # stream -> bytes left to send

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.writer.write(data)

    async def run(self):
        STATS["connections"] += 1
        STATS["open"] += 1
        STATS["conn_peak"] = max(STATS["conn_peak"], STATS["open"])
        self.h2.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS}
        )
        self.h2.initiate_connection()
        self.flush()
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    self.flush()
                    break
                for ev in events:
                    await self.on_event(ev)
                self.flush()
                await self.writer.drain()
                if self.last_ok is not None and not self.open and not self.pending:
                    # Done after our GOAWAY: shut our side, then read what is still coming
                    # (streams we ignored) until the proxy closes, so that the close is a FIN,
                    # not the RST a socket closed with unread data sends.
                    try:
                        self.writer.write_eof()
                        while await asyncio.wait_for(self.reader.read(65536), 2):
                            pass
                    except (asyncio.TimeoutError, ConnectionError, OSError):
                        pass
                    break
        finally:
            STATS["open"] -= 1
            self.writer.close()

    async def on_event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            sid = ev.stream_id
            if self.last_ok is not None and sid > self.last_ok:
                return  # after our GOAWAY: ignored, never processed
            self.count += 1
            STATS["streams"] += 1
            self.open.add(sid)
            if len(self.open) > MAX_STREAMS:
                STATS["violations"] += 1
            STATS["peak"] = max(STATS["peak"], len(self.open))
            if GOAWAY_AFTER and self.count == GOAWAY_AFTER:
                self.last_ok = sid
                # A graceful GOAWAY written by hand: the library's close_connection ends the
                # connection at once, and the streams up to `sid` must still be answered (this
                # one too, unless it is refused below).
                self.flush()
                self.writer.write(struct.pack(">I", 8)[1:] + bytes([7, 0]) + struct.pack(">III", 0, sid, 0))
            if REFUSE_EVERY and STATS["streams"] % REFUSE_EVERY == 0:
                STATS["refused"] += 1
                self.h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
                self.open.discard(sid)
                return
            self.heads[sid] = ev.headers
            self.bodies[sid] = 0
            if ev.stream_ended:
                await self.respond(sid)
        elif isinstance(ev, h2.events.DataReceived):
            sid = ev.stream_id
            if sid in self.bodies:
                self.bodies[sid] += len(ev.data)
            self.h2.acknowledge_received_data(ev.flow_controlled_length, sid)
            if ev.stream_ended and sid in self.heads:
                await self.respond(sid)
        elif isinstance(ev, h2.events.StreamEnded):
            pass
        elif isinstance(ev, h2.events.StreamReset):
            if ev.remote_reset:
                STATS["resets"] += 1
            self.open.discard(ev.stream_id)
            self.pending.pop(ev.stream_id, None)
        elif isinstance(ev, h2.events.WindowUpdated):
            self.send_pending()

    async def respond(self, sid):
        head = {k: v for k, v in self.heads.pop(sid)}
        path = head.get(b":path", b"/").decode().split("?")[0]
        status = b"200"
        if path == "/echo":
            body = b"".join(k + b": " + v + b"\n" for k, v in self.h2_fields(sid, head))
        elif path == "/upload":
            body = str(self.bodies.get(sid, 0)).encode()
        elif path.startswith("/bytes/"):
            body = b"b" * int(path[len("/bytes/"):])
        elif path.startswith("/nolength/"):
            # No content-length: the body ends with the stream.
            self.answer(sid, b"n" * int(path[len("/nolength/"):]), status, length=False)
            return
        elif path.startswith("/slow/"):
            # Answered later, while the connection goes on with other streams.
            loop = asyncio.get_running_loop()
            loop.call_later(int(path[len("/slow/"):]) / 1000, self.answer, sid, b"slow")
            return
        elif path == "/peak":
            body = ("peak %d streams %d violations %d refused %d connections %d resets %d "
                    "conn_peak %d" % (
                        STATS["peak"], STATS["streams"], STATS["violations"], STATS["refused"],
                        STATS["connections"], STATS["resets"], STATS["conn_peak"])).encode()
        else:
            body = ("h2 ok %s" % path).encode()
        self.answer(sid, body, status)

    def answer(self, sid, body, status=b"200", length=True):
        if sid not in self.open:
            return  # reset meanwhile
        fields = [(b":status", status)]
        if length:
            fields.append((b"content-length", str(len(body)).encode()))
        self.h2.send_headers(sid, fields + [(b"server", b"h2-backend")])
        self.pending[sid] = body
        self.send_pending()

    def h2_fields(self, sid, head):
        return list(head.items())

    def send_pending(self):
        for sid in list(self.pending):
            body = self.pending[sid]
            try:
                self.h2.local_flow_control_window(sid)
            except h2.exceptions.StreamClosedError:
                del self.pending[sid]  # reset by the peer (its event comes later in the batch)
                continue
            while body:
                n = min(len(body), self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                if n <= 0:
                    break
                self.h2.send_data(sid, body[:n])
                body = body[n:]
            if body:
                self.pending[sid] = body
            else:
                del self.pending[sid]
                self.h2.end_stream(sid)
                self.open.discard(sid)
        self.flush()


async def main():
    ctx = None
    if CERT:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(CERT, KEY)
        ctx.set_alpn_protocols(["h2"])

    async def handle(reader, writer):
        await Conn(reader, writer).run()

    server = await asyncio.start_server(handle, "127.0.0.1", PORT, ssl=ctx)
    print("ready %d" % PORT, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import h2.exceptions
    import h2.settings

    asyncio.run(main())
