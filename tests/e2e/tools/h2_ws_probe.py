#!/usr/bin/env python3
"""RFC 8441 WebSockets over HTTP/2 with the Python `h2` library, for tests/e2e/tunnel.rs.

  h2_ws_probe.py HOST PORT PATH STREAMS [PROTOCOL]
      one h2c connection (prior knowledge); checks the server's SETTINGS_ENABLE_CONNECT_PROTOCOL,
      opens STREAMS extended CONNECT streams (`:protocol` PROTOCOL, default websocket) at once,
      and on each that got 200 sends a masked text frame `stream N` and reads its echo; then
      ends every stream (END_STREAM) and waits for the server to end them.
Prints `settings enable_connect_protocol=V`, `status S` per distinct status with its count,
`echoed K` (streams whose echo came back), `ended E` (streams the server ended), or FAIL.
"""
import os, socket, struct, sys, time

import h2.config, h2.connection, h2.events, h2.settings


def frame(text):
    mask = os.urandom(4)
    payload = text.encode()
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


def main():
    host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    protocol = sys.argv[5] if len(sys.argv) > 5 else "websocket"
    s = socket.create_connection((host, port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    s.sendall(conn.data_to_send())
    statuses, got, ended, want, ending = {}, {}, set(), {}, set()
    opened = False
    deadline = time.time() + 20
    while time.time() < deadline:
        data = s.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged) and not opened:
                v = conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0)
                print(f"settings enable_connect_protocol={v}")
                if not v:
                    return  # extended CONNECT may not be sent
                opened = True
                for i in range(n):
                    sid = conn.get_next_available_stream_id()
                    conn.send_headers(sid, [
                        (":method", "CONNECT"), (":protocol", protocol), (":scheme", "http"),
                        (":path", path), (":authority", f"{host}:{port}"),
                        ("sec-websocket-version", "13"), ("origin", "http://test"),
                    ])
                    want[sid] = f"stream {sid}"
            elif isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers).get(b":status", b"?").decode()
                statuses[status] = statuses.get(status, 0) + 1
                if status == "200":
                    conn.send_data(ev.stream_id, frame(want[ev.stream_id]))
                    got[ev.stream_id] = b""
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                got[ev.stream_id] = got.get(ev.stream_id, b"") + ev.data
                echo = got[ev.stream_id]
                if len(echo) >= 2 + echo[1] and ev.stream_id not in ending:
                    ending.add(ev.stream_id)
                    conn.end_stream(ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                ended.add(ev.stream_id)
        s.sendall(conn.data_to_send())
        if opened and len(ended) >= n:
            break
    for st, k in sorted(statuses.items()):
        print("status", st, k)
    echoed = sum(1 for sid, text in want.items()
                 if got.get(sid, b"")[2:2 + len(text)] == text.encode() and got[sid][0] == 0x81)
    print("echoed", echoed)
    print("ended", len(ended))


if __name__ == "__main__":
    main()
