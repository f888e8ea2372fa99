#!/usr/bin/env python3
"""An h2c (prior knowledge) WebSocket echo server over RFC 8441, with the Python `h2` library,
for tests/e2e/tunnel.rs.

  h2_ws_backend.py [noext]

Prints `port N` once listening, then `conn` for each connection. It allows 100 streams per
connection and announces SETTINGS_ENABLE_CONNECT_PROTOCOL (not with `noext`). An extended
CONNECT with `:protocol websocket` gets 200; every WebSocket frame on its stream comes back
unmasked (text, binary and continuations echoed, pings answered with pongs, a close echoed and
the stream ended), and the proxy's END_STREAM ends it too. Any other request gets 404.
Runs until killed; a thread per connection.
"""
import socket, sys, threading

import h2.config, h2.connection, h2.events, h2.settings


def frames(buf):
    """Complete frames at the front of `buf`: (fin_opcode byte, unmasked payload), and the rest."""
    out = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        n, at = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, at = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, at = int.from_bytes(buf[2:10], "big"), 10
        mask = None
        if b1 & 0x80:
            if len(buf) < at + 4:
                break
            mask, at = buf[at:at + 4], at + 4
        if len(buf) < at + n:
            break
        payload = buf[at:at + n]
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        out.append((b0, payload))
        buf = buf[at + n:]
    return out, buf


def frame(b0, payload):
    n = len(payload)
    if n < 126:
        head = bytes([b0, n])
    elif n < 65536:
        head = bytes([b0, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, 127]) + n.to_bytes(8, "big")
    return head + payload


def serve(sock, ext):
    print("conn", flush=True)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.local_settings = h2.settings.Settings(client=False, initial_values={
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
        h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1 if ext else 0,
    })
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    bufs = {}
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    h = dict(ev.headers)
                    if h.get(b":method") == b"CONNECT" and h.get(b":protocol") == b"websocket":
                        conn.send_headers(ev.stream_id, [(":status", "200")])
                        bufs[ev.stream_id] = b""
                    else:
                        conn.send_headers(ev.stream_id, [(":status", "404")], end_stream=True)
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    if ev.stream_id not in bufs:
                        continue
                    got, bufs[ev.stream_id] = frames(bufs[ev.stream_id] + ev.data)
                    for b0, payload in got:
                        op = b0 & 0x0F
                        if op == 9:
                            conn.send_data(ev.stream_id, frame(0x8A, payload))
                        elif op == 8:
                            conn.send_data(ev.stream_id, frame(0x88, payload), end_stream=True)
                            bufs.pop(ev.stream_id, None)
                            break
                        elif op in (0, 1, 2):
                            conn.send_data(ev.stream_id, frame(b0, payload))
                elif isinstance(ev, h2.events.StreamEnded):
                    if ev.stream_id in bufs:
                        bufs.pop(ev.stream_id)
                        conn.end_stream(ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset):
                    bufs.pop(ev.stream_id, None)
            sock.sendall(conn.data_to_send())
    except (ConnectionError, h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
        pass
    finally:
        sock.close()


def main():
    ext = not (len(sys.argv) > 1 and sys.argv[1] == "noext")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    print("port", listener.getsockname()[1], flush=True)
    while True:
        s, _ = listener.accept()
        threading.Thread(target=serve, args=(s, ext), daemon=True).start()


if __name__ == "__main__":
    main()
