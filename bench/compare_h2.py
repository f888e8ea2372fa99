#!/usr/bin/env python3
"""HTTP/2 benchmarks: coreplex vs nginx vs haproxy, side by side, same core, with h2load.

Each server runs alone, pinned to core 0 (coreplex: one shard; nginx: one worker; haproxy: one
thread), answering `GET /` directly with "Hello, World!" over h2c (prior knowledge) and over TLS
1.3 (ALPN h2, ECDSA P-256); h2load runs pinned to core 1 with one thread. For each scenario
(transport x connections x concurrent streams) the servers are measured in turn for several
rounds. Server CPU = utime + stime of the server process (/proc/PID/stat) over each run; CPU per
request = that time / requests h2load completed.

With `--target proxy` every server proxies each request to the same HTTP/1.1 nginx backend
(bench/peers/nginx-backend.conf on 18090, one worker pinned to core 0 beside the proxy; its CPU
is not counted) over pooled keep-alive connections instead of answering directly.

With `--target h2backend` the backend is the same nginx speaking h2c (prior knowledge,
bench/peers/nginx-backend-h2.conf, 128 streams per connection) and the proxies multiplex the
streams onto few backend connections (`reuse = "always"`, haproxy `http-reuse always` with
`proto h2`). nginx cannot proxy to an HTTP/2 backend (only gRPC), so it is not measured there.
That target adds an HTTP/1.1 scenario: wrk's 100 connections on a plain listener (8091), their
requests multiplexed onto the h2 backend connections all the same.

Usage: python3 bench/compare_h2.py [--rounds 3] [--requests 300000] [--only h2c,tls]
                                   [--target direct|proxy|h2backend]
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from compare_direct import Server  # noqa: E402

TLS, PLAIN, H1, BACKEND = 8443, 8090, 8091, 18090
SCENARIOS = [  # name, scheme ("h1": HTTP/1.1 clients), port, connections, streams
    ("h2c 100x10", "http", PLAIN, 100, 10),
    ("h2c 100x100", "http", PLAIN, 100, 100),
    ("tls 100x10", "https", TLS, 100, 10),
    ("tls 100x100", "https", TLS, 100, 100),
    ("h1 100", "h1", H1, 100, 1),
]


def wrk(port, conns, n):
    """HTTP/1.1 load with wrk (h2load --h1 rejects haproxy's empty reason phrase): a run long
    enough for about `n` requests at 30k/s."""
    secs = max(2, round(n / 30000))
    argv = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{secs}s",
            f"http://127.0.0.1:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw failures: {out}")
    done = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return done, rps


def h2load(scheme, port, conns, streams, n):
    if scheme == "h1":
        return wrk(port, conns, n)
    argv = ["taskset", "-c", "1", "h2load", "-t1", f"-c{conns}", f"-m{streams}", f"-n{n}",
            f"{scheme}://127.0.0.1:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    if not m or int(m.group(2)) != 0:
        raise RuntimeError(f"h2load failed: {out}")
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    return int(m.group(1)), rps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coreplex", default=os.path.join(ROOT, "target/release/coreplex"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=300000)
    ap.add_argument("--only", default="", help="scenario name prefixes, comma-separated")
    ap.add_argument("--target", choices=["direct", "proxy", "h2backend"], default="direct")
    a = ap.parse_args()
    suffix = {"direct": "", "proxy": "-proxy", "h2backend": "-h2backend"}[a.target]
    tmp = tempfile.mkdtemp(prefix="cph2-")
    os.chmod(tmp, 0o755)
    certs = os.path.join(ROOT, "examples/certs")
    for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi"]:
        os.makedirs(os.path.join(tmp, d), exist_ok=True)

    def render(src, dst):
        text = open(src).read()
        subst = {"@PORT@": str(TLS), "@PLAIN@": str(PLAIN), "@DIR@": tmp, "@CERTS@": certs,
                 "@BACKEND@": str(BACKEND), "@H1@": str(H1)}
        for k, v in subst.items():
            text = text.replace(k, v)
        open(dst, "w").write(text)

    render(os.path.join(HERE, f"configs/h2{suffix}.toml"), os.path.join(tmp, "coreplex.toml"))
    if a.target != "h2backend":
        render(os.path.join(HERE, f"peers/nginx-h2{suffix}.conf"), os.path.join(tmp, "nginx.conf"))
    render(os.path.join(HERE, f"peers/haproxy-h2{suffix}.cfg"), os.path.join(tmp, "haproxy.cfg"))
    backend = None
    if a.target in ("proxy", "h2backend"):
        bdir = os.path.join(tmp, "backend")
        for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi"]:
            os.makedirs(os.path.join(bdir, d), exist_ok=True)
        conf = "nginx-backend.conf" if a.target == "proxy" else "nginx-backend-h2.conf"
        text = open(os.path.join(HERE, "peers", conf)).read()
        open(os.path.join(bdir, "nginx.conf"), "w").write(
            text.replace("@PORT@", str(BACKEND)).replace("@DIR@", bdir))
        backend = Server("backend", ["taskset", "-c", "0", shutil.which("nginx") or "/usr/sbin/nginx",
                                     "-c", os.path.join(bdir, "nginx.conf"), "-p", bdir], BACKEND)
    with open(os.path.join(tmp, "ecdsa.pem"), "w") as f:
        f.write(open(os.path.join(certs, "ecdsa.pem")).read() + open(os.path.join(certs, "ecdsa.key")).read())
    servers = {
        "coreplex": ["taskset", "-c", "0", a.coreplex, "run", "-c", os.path.join(tmp, "coreplex.toml"),
                     "--cpus", "0", "--log-level", "warn"],
        "nginx": ["taskset", "-c", "0", shutil.which("nginx") or "/usr/sbin/nginx", "-c",
                  os.path.join(tmp, "nginx.conf"), "-p", tmp],
        "haproxy": ["taskset", "-c", "0", shutil.which("haproxy") or "/usr/sbin/haproxy", "-f",
                    os.path.join(tmp, "haproxy.cfg")],
    }
    if a.target == "h2backend":
        del servers["nginx"]
    only = [x for x in a.only.split(",") if x]
    results = {}
    print(f"target: {a.target}", flush=True)
    for name, scheme, port, conns, streams in SCENARIOS:
        if only and not any(name.startswith(o) for o in only):
            continue
        if scheme == "h1" and a.target != "h2backend":
            continue
        for r in range(a.rounds):
            for server, argv in servers.items():
                s = Server(server, argv, PLAIN)
                try:
                    h2load(scheme, port, conns, streams, 20000)  # warm-up
                    c0 = s.cpu()
                    done, rps = h2load(scheme, port, conns, streams, a.requests)
                    us = (s.cpu() - c0) / done * 1e6
                finally:
                    s.stop()
                results.setdefault((name, server), []).append((us, rps))
                print(f"{name:>12} round {r + 1} {server:>8}: {us:6.2f} us CPU/request, {rps:9.0f} req/s",
                      flush=True)
    print()
    print("| scenario | server | CPU us/request (median) | req/s (median) | vs nginx | vs haproxy |")
    print("|---|---|---|---|---|---|")
    for name, *_ in SCENARIOS:
        med = {sv: statistics.median(x[0] for x in results[(name, sv)])
               for sv in servers if (name, sv) in results}
        if not med:
            continue
        for sv in servers:
            if sv not in med:
                continue
            rps = statistics.median(x[1] for x in results[(name, sv)])
            vn = f"{med[sv] / med['nginx']:.2f}x" if "nginx" in med else "n/a"
            vh = f"{med[sv] / med['haproxy']:.2f}x" if "haproxy" in med else "n/a"
            print(f"| {name} | {sv} | {med[sv]:.2f} | {rps:.0f} | {vn} | {vh} |")
    if backend:
        backend.stop()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
