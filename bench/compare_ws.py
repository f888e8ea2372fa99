#!/usr/bin/env python3
"""WebSocket echo: coreplex's echo endpoint vs npm ws (Node.js) vs Python websockets, same core.

Each server alone pinned to core 0 (coreplex: one shard, --cpus 0; node and python are single
threaded); the load (bench/ws-node/load.js: npm ws clients, closed loop: a message, its echo,
the next) pinned to core 1; no compression. Server CPU = utime + stime from /proc/PID/stat over
each run; messages echoed per second and server CPU per message. Rounds alternate servers.

Usage: python3 bench/compare_ws.py [--rounds 3] [--duration 5] [--conns 50]
Needs: cargo build --release -p coreplex; (cd bench/ws-node && npm install)
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TICK = os.sysconf("SC_CLK_TCK")

COREPLEX = """version = 1
[global]
shards = 1
[admin]
bind = "127.0.0.1:0"
[[listener]]
name = "ws"
bind = "127.0.0.1:{port}"
[[listener.route]]
path_prefix = "/"
websocket = "echo"
"""

PY_ECHO = """
import asyncio, sys, websockets
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None, max_size=None):
        await asyncio.Future()
asyncio.run(main())
"""


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def start(name, port):
    if name == "coreplex":
        cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        cfg.write(COREPLEX.format(port=port))
        cfg.close()
        argv = [os.path.join(ROOT, "target/release/coreplex"), "run", "-c", cfg.name, "--cpus", "0"]
    elif name == "ws (node)":
        argv = ["taskset", "-c", "0", "node", os.path.join(HERE, "ws-node/echo_server.js"), str(port)]
    else:
        argv = ["taskset", "-c", "0", sys.executable, "-c", PY_ECHO, str(port)]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    time.sleep(0.3)
    return p


def run_load(port, conns, seconds, kind):
    out = subprocess.run(
        ["taskset", "-c", "1", "node", os.path.join(HERE, "ws-node/load.js"), f"ws://127.0.0.1:{port}/",
         str(conns), str(seconds), kind], capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])["messages"]


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--duration", type=int, default=5)
    a.add_argument("--conns", type=int, default=50)
    args = a.parse_args()
    servers = ["coreplex", "ws (node)", "websockets (python)"]
    results = {}
    ports = iter(range(9201, 9400))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} duration={args.duration}s rounds={args.rounds} conns={args.conns}")
    for kind in ["json", "1k"]:
        for r in range(args.rounds):
            order = servers if r % 2 == 0 else servers[::-1]
            for name in order:
                # A fresh port per start: a killed server's io_uring may hold its socket a moment.
                port = next(ports)
                p = start(name, port)
                try:
                    run_load(port, args.conns, 1, kind)  # warm-up
                    c0 = cpu(p.pid)
                    n = run_load(port, args.conns, args.duration, kind)
                    used = cpu(p.pid) - c0
                finally:
                    p.terminate()
                    p.wait()
                results.setdefault((kind, name), []).append((n / args.duration, used * 1e6 / max(n, 1)))
                print(f"  {kind:4} round={r} {name:20} {n / args.duration:10.0f} msg/s  cpu/msg={used * 1e6 / max(n, 1):.2f}us")
    print()
    print("| message | server | messages/s (median) | server CPU us per message (median, min-max) | CPU vs coreplex |")
    print("|---|---|---|---|---|")
    for kind in ["json", "1k"]:
        base = statistics.median(c for _, c in results[(kind, "coreplex")])
        for name in servers:
            rates = [x for x, _ in results[(kind, name)]]
            cpus = [c for _, c in results[(kind, name)]]
            m = statistics.median(cpus)
            print(f"| {kind} | {name} | {statistics.median(rates):,.0f} | {m:.2f} ({min(cpus):.2f}-{max(cpus):.2f}) | {m / base:.2f}x |")


if __name__ == "__main__":
    main()
