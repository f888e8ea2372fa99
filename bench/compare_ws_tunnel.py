#!/usr/bin/env python3
"""WebSocket tunnels: coreplex vs haproxy vs nginx as the proxy in front of one WebSocket echo
backend, same core, same sitting.

The backend is a coreplex echo endpoint (`websocket = "echo"`, one shard, pinned to core 1); each
proxy alone is pinned to core 0 (coreplex: one shard, --cpus 0; haproxy: nbthread 1; nginx: one
worker) with the configs in bench/peers/*-ws-tunnel.cfg|conf. Two measurements:

`coreplex` tunnels the bytes (the default for `Upgrade: websocket` on a backend route);
`coreplex-ws` is a WebSocket-aware route (`websocket = "terminate"`): the framing ends at the
proxy and messages go on over its own WebSocket to the backend.

- echo: the npm ws load (bench/ws-node/load.js, core 1, closed loop, no compression) through
  the proxy: messages per second and proxy CPU (utime + stime from /proc/PID/stat) per message,
  for a 60-byte JSON text and 1 KiB binary. Rounds alternate the proxies.
- idle: --idle tunnels (default 9,500: 19,000 proxy sockets, under the open-files limit of
  20,000) opened by --procs client processes after 200 warm-up tunnels; each completes its
  upgrade and one echo, then sends 3 pings 1 s apart and reads its pongs (held with pings). User
  memory per tunnel (both of the proxy's connections) = growth of the proxy's RSS / tunnels;
  kernel memory beside it = growth of Slab + TCP socket memory (/proc/meminfo,
  /proc/net/sockstat) / sockets (four per tunnel: client, two at the proxy, backend).

Usage: python3 bench/compare_ws_tunnel.py [--rounds 3] [--duration 5] [--conns 50]
                                          [--idle 9500] [--procs 2] [--only echo|idle]
                                          [--proxies coreplex,coreplex-ws,haproxy,nginx]
                                          [--echo-idle 19000]
Needs: cargo build --release -p coreplex; (cd bench/ws-node && npm install); haproxy, nginx.
"""
import argparse, base64, json, os, resource, shutil, socket, statistics, struct, subprocess, sys
import tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TICK = os.sysconf("SC_CLK_TCK")
BIN = os.path.join(ROOT, "target/release/coreplex")
PROXIES = ["coreplex", "coreplex-ws", "haproxy", "nginx"]

BACKEND = """version = 1
[global]
shards = 1
max_connections = {max_conn}
[admin]
bind = "127.0.0.1:0"
[[listener]]
name = "echo"
bind = "127.0.0.1:{port}"
backlog = 4096
[[listener.route]]
path_prefix = "/"
websocket = "echo"
"""

PROXY = """version = 1
[global]
shards = 1
max_connections = 9900
[admin]
bind = "127.0.0.1:0"
[[listener]]
name = "front"
bind = "127.0.0.1:{port}"
backlog = 4096
[[listener.route]]
path_prefix = "/"
backend = "echo"
{route_extra}
[backend.echo]
servers = [{{ address = "127.0.0.1:{backend}" }}]
"""


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024


def kernel_bytes():
    """Slab plus TCP socket buffer memory, in bytes."""
    slab = 0
    for line in open("/proc/meminfo"):
        if line.startswith("Slab:"):
            slab = int(line.split()[1]) * 1024
    pages = 0
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            f = line.split()
            pages = int(f[f.index("mem") + 1])
    return slab + pages * 4096


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def write_temp(text, suffix):
    f = tempfile.NamedTemporaryFile("w", suffix=suffix, delete=False)
    f.write(text)
    f.close()
    return f.name


class Proc:
    """A started server: `measured` is the PID whose CPU and RSS count (nginx: its worker)."""

    def __init__(self, argv, port, tmp=None, worker=False):
        self.tmp = tmp
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        time.sleep(0.3)
        self.measured = self.p.pid
        if worker:
            kids = subprocess.run(["pgrep", "-P", str(self.p.pid)], capture_output=True,
                                  text=True).stdout.split()
            self.measured = int(kids[0])

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def start_backend(port, max_conn=9900):
    cfg = write_temp(BACKEND.format(port=port, max_conn=max_conn), ".toml")
    return Proc([BIN, "run", "-c", cfg, "--cpus", "1", "--log-level", "warn"], port)


def start_proxy(name, port, backend):
    if name.startswith("coreplex"):
        extra = 'websocket = "terminate"' if name == "coreplex-ws" else ""
        cfg = write_temp(PROXY.format(port=port, backend=backend, route_extra=extra), ".toml")
        return Proc([BIN, "run", "-c", cfg, "--cpus", "0", "--log-level", "warn"], port)
    tmp = tempfile.mkdtemp(prefix="cpws-")
    peer = "haproxy-ws-tunnel.cfg" if name == "haproxy" else "nginx-ws-tunnel.conf"
    text = open(os.path.join(HERE, "peers", peer)).read()
    text = text.replace("@PORT@", str(port)).replace("@BACKEND@", str(backend))
    text = text.replace("@DIR@", tmp)
    cfg = os.path.join(tmp, peer)
    open(cfg, "w").write(text)
    if name == "haproxy":
        return Proc(["taskset", "-c", "0", "haproxy", "-f", cfg], port, tmp)
    return Proc(["taskset", "-c", "0", "nginx", "-c", cfg, "-p", tmp], port, tmp, worker=True)


def run_load(port, conns, seconds, kind):
    out = subprocess.run(
        ["taskset", "-c", "1", "node", os.path.join(HERE, "ws-node/load.js"),
         f"ws://127.0.0.1:{port}/", str(conns), str(seconds), kind],
        capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])["messages"]


def echo(args, ports):
    results = {}
    backend_port = next(ports)
    backend = start_backend(backend_port)
    try:
        for kind in ["json", "1k"]:
            for r in range(args.rounds):
                for name in (args.proxies if r % 2 == 0 else args.proxies[::-1]):
                    port = next(ports)
                    p = start_proxy(name, port, backend_port)
                    try:
                        run_load(port, args.conns, 1, kind)  # warm-up
                        c0 = cpu(p.measured)
                        n = run_load(port, args.conns, args.duration, kind)
                        used = cpu(p.measured) - c0
                    finally:
                        p.stop()
                    per = used * 1e6 / max(n, 1)
                    results.setdefault((kind, name), []).append((n / args.duration, per))
                    print(f"  {kind:4} round={r} {name:9} {n / args.duration:9.0f} msg/s"
                          f"  proxy cpu/msg={per:.2f}us", flush=True)
    finally:
        backend.stop()
    print()
    print("| message | proxy | messages/s (median) | proxy CPU us per message (median, min-max) | CPU vs the first |")
    print("|---|---|---|---|---|")
    for kind in ["json", "1k"]:
        base = statistics.median(c for _, c in results[(kind, args.proxies[0])])
        for name in args.proxies:
            rates = [x for x, _ in results[(kind, name)]]
            cpus = [c for _, c in results[(kind, name)]]
            m = statistics.median(cpus)
            print(f"| {kind} | {name} | {statistics.median(rates):,.0f} | {m:.2f} "
                  f"({min(cpus):.2f}-{max(cpus):.2f}) | {m / base:.2f}x |")


# ---- idle tunnels held with pings, from client processes -----------------------------------

def client(port, count, pings):
    """Child process: opens `count` WebSockets, one echo each, then `pings` rounds of pings;
    prints `ready`, holds them until stdin closes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mask = b"\x01\x02\x03\x04"
    text = b"hi" * 1000
    frame = bytes([0x81, 0x80 | 126]) + len(text).to_bytes(2, "big") + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(text))
    conns = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("closed during the upgrade")
            got += chunk
        if b" 101 " not in got.split(b"\r\n", 1)[0]:
            raise SystemExit(f"no 101: {got[:80]!r}")
        got = got.split(b"\r\n\r\n", 1)[1]
        s.sendall(frame)
        while len(got) < 4 + len(text):
            got += s.recv(65536)
        conns.append(s)
    ping = b"\x89\x84" + mask + bytes(b ^ mask[i] for i, b in enumerate(b"ping"))
    for _ in range(pings):
        for s in conns:
            s.sendall(ping)
        for s in conns:
            s.recv(64)
        time.sleep(1)
    print("ready", flush=True)
    sys.stdin.read()
    # Reset, not FIN: 9,500 connections a run must not leave their ports in TIME_WAIT.
    for s in conns:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def open_clients(port, total, procs, pings):
    kids = []
    for i in range(procs):
        n = total // procs + (1 if i < total % procs else 0)
        kids.append(subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, os.path.abspath(__file__), "--client",
             str(port), str(n), str(pings)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True))
    for k in kids:
        line = k.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"client process: {line!r}")
    return kids


def close_clients(kids):
    for k in kids:
        k.stdin.close()
    for k in kids:
        try:
            k.wait(30)
        except subprocess.TimeoutExpired:
            k.kill()
            k.wait()


def idle(args, ports):
    print(f"\n| proxy | idle tunnels held with pings | user memory per tunnel (both connections) "
          f"| kernel memory per socket (4 per tunnel) |")
    print("|---|---|---|---|")
    for name in args.proxies + (["echo"] if args.echo_idle else []):
        # `echo`: the echo endpoint itself, held directly (a terminated WebSocket: one
        # connection at the server, two sockets per WebSocket).
        direct = name == "echo"
        count = args.echo_idle if direct else args.idle
        backend_port = next(ports)
        backend = start_backend(backend_port, 19500 if direct else 9900)
        port = backend_port if direct else next(ports)
        p = backend if direct else start_proxy(name, port, backend_port)
        sockets = 2 if direct else 4
        warm, kids = [], []
        try:
            warm = open_clients(port, 200, 1, 0)
            time.sleep(1)
            base, kbase = rss(p.measured), kernel_bytes()
            kids = open_clients(port, count, args.procs, 3)
            time.sleep(2)
            grown, kgrown = rss(p.measured) - base, kernel_bytes() - kbase
            label = "coreplex echo endpoint (direct)" if direct else name
            print(f"| {label} | {count:,} | {grown / count:,.0f} B "
                  f"| {kgrown / (sockets * count):,.0f} B |", flush=True)
        except RuntimeError as e:
            print(f"| {name} | {args.idle:,} | failed: {e} | |", flush=True)
        finally:
            close_clients(kids + warm)
            if not direct:
                p.stop()
            backend.stop()
        time.sleep(5)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        return client(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    a = argparse.ArgumentParser()
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--duration", type=int, default=5)
    a.add_argument("--conns", type=int, default=50)
    a.add_argument("--idle", type=int, default=9500)
    a.add_argument("--procs", type=int, default=2)
    a.add_argument("--echo-idle", type=int, default=0,
                   help="also hold this many WebSockets on the echo endpoint itself (19000 fits)")
    a.add_argument("--only", choices=["echo", "idle"])
    a.add_argument("--proxies", default=",".join(PROXIES), help="which, in order (ratios are against the first)")
    args = a.parse_args()
    args.proxies = args.proxies.split(",")
    ports = iter(range(9401, 9700))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} duration={args.duration}s rounds={args.rounds} "
          f"conns={args.conns} idle={args.idle} procs={args.procs}")
    if args.only != "idle":
        echo(args, ports)
    if args.only != "echo":
        idle(args, ports)


if __name__ == "__main__":
    sys.exit(main())
