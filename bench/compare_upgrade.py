#!/usr/bin/env python3
"""Swapping a running server under load: what do its clients lose?

Each server answers `GET /` directly (one shard / worker / thread). Two coreplex-bench clients
drive it for --duration seconds: keep-alive connections (closed loop, no retry on a closed
connection: a request lost to a close counts as an error, as wrk counts it) and new connections
(`--reconnect`: a connection per request). During the run each server is swapped --swaps times,
the way its operators do it without downtime:

- coreplex: a binary upgrade, `coreplex upgrade` (new process, listening sockets handed over,
  old process drains with `close_spread_time`);
- HAProxy 2.6: master-worker reload (`-W`, SIGUSR2 to the master: a new worker gets the
  listening sockets, the old one finishes);
- nginx: reload (SIGHUP to the master: new workers on the master's sockets, old ones finish).

Reported per server: requests answered, connection attempts refused or failed, requests lost to
a close, a reset or a timeout.

Usage: python3 bench/compare_upgrade.py [--coreplex target/release/coreplex]
       [--bench target/release/coreplex-bench] [--duration 8] [--swaps 3] [--conns 50]
"""
import argparse, json, os, shutil, signal, socket, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare_direct import wait_port  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_coreplex(exe, port, tmp):
    ctl = os.path.join(tmp, "ctl.sock")
    pid_file = os.path.join(tmp, "coreplex.pid")
    cfg = os.path.join(tmp, "coreplex.toml")
    with open(cfg, "w") as f:
        f.write(f"""version = 1
[global]
shards = 1
max_connections = 4096
shutdown_timeout = "5s"
close_spread_time = "2s"
control_socket = "{ctl}"
pid_file = "{pid_file}"
[[listener]]
name = "bench"
bind = "127.0.0.1:{port}"
[[listener.route]]
respond = {{ status = 200, headers = {{ "Content-Type" = "text/plain" }}, body = "Hello, World!" }}
""")
    proc = subprocess.Popen([exe, "run", "-c", cfg, "--log-level", "warn"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)

    def swap():
        subprocess.run([exe, "upgrade", "--socket", ctl], check=True, stdout=subprocess.DEVNULL)

    def stop():
        for pid in {proc.pid, int(open(pid_file).read())}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()

    return swap, stop


def start_peer(template, port, tmp, argv, swap_signal, extra=()):
    """Writes peers/TEMPLATE with the port (and the temporary directory) substituted, starts
    ARGV + [the config file] in a session of its own; a swap sends SWAP_SIGNAL to it."""
    cfg = os.path.join(tmp, template)
    with open(os.path.join(HERE, "peers", template)) as f:
        text = f.read().replace("@PORT@", str(port)).replace("@DIR@", tmp)
    for a, b in extra:
        text = text.replace(a, b)
    with open(cfg, "w") as f:
        f.write(text)
    proc = subprocess.Popen(argv(cfg), stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(tmp, "stderr"), "w"), start_new_session=True)

    def swap():
        os.kill(proc.pid, swap_signal)

    def stop():
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    return swap, stop


def start_haproxy(port, tmp):
    return start_peer("haproxy-direct.cfg", port, tmp, lambda cfg: ["haproxy", "-W", "-db", "-f", cfg],
                      signal.SIGUSR2, extra=[("maxconn 9900", "maxconn 4096")])


def start_nginx(port, tmp):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return start_peer("nginx-direct.conf", port, tmp, lambda cfg: [nginx, "-c", cfg, "-p", tmp],
                      signal.SIGHUP)


def run(name, start, bench, args):
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="cpx-upgrade-" + name.split()[0] + "-")
    swap, stop = start(port, tmp)
    try:
        try:
            wait_port(port)
        except RuntimeError:
            for log in ("stderr", "nginx-error.log"):
                path = os.path.join(tmp, log)
                if os.path.exists(path):
                    print(f"{name} {log}:", open(path).read(), file=sys.stderr)
            raise
        time.sleep(0.3)
        url = f"http://127.0.0.1:{port}/"
        common = ["-d", f"{args.duration}s", "--json", "--timeout", "3s"]
        keep = subprocess.Popen([bench, "load", url, "-c", str(args.conns)] + common,
                                stdout=subprocess.PIPE, text=True)
        new = subprocess.Popen([bench, "load", url, "-c", str(max(1, args.conns // 5)), "--reconnect"] + common,
                               stdout=subprocess.PIPE, text=True)
        step = args.duration / (args.swaps + 1)
        for _ in range(args.swaps):
            time.sleep(step)
            swap()
        reports = [json.loads(p.communicate()[0]) for p in (keep, new)]
    finally:
        stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return reports


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coreplex", default="target/release/coreplex")
    ap.add_argument("--bench", default="target/release/coreplex-bench")
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--swaps", type=int, default=3)
    ap.add_argument("--conns", type=int, default=50)
    args = ap.parse_args()
    servers = [
        ("coreplex (upgrade)", lambda p, t: start_coreplex(args.coreplex, p, t)),
        ("haproxy -W (reload)", start_haproxy),
        ("nginx (reload)", start_nginx),
    ]
    print(f"{args.swaps} swaps in {args.duration:.0f} s; {args.conns} keep-alive connections + "
          f"{max(1, args.conns // 5)} new-connection clients (coreplex-bench, no retries)")
    print(f"{'server':22} {'client':10} {'answered':>9} {'refused/failed connects':>24} "
          f"{'lost: closed':>13} {'reset':>6} {'timeout':>8}")
    for name, start in servers:
        keep, new = run(name, start, args.bench, args)
        for kind, r in (("keep-alive", keep), ("new conn", new)):
            e = r["errors"]
            print(f"{name:22} {kind:10} {r['answered']:>9} {e['connect']:>24} {e['closed']:>13} "
                  f"{e['reset']:>6} {e['timeout']:>8}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
