#!/usr/bin/env python3
"""Backend multiplexing: many HTTP/2 client connections carried to an h2c backend over few
connections.

coreplex (2 shards, `protocol = "h2"`, `reuse = "always"`) proxies to nginx speaking h2c with
128 streams per connection (bench/peers/nginx-backend-h2.conf). h2load opens CLIENTS client
connections with one stream each (so at most CLIENTS streams are in flight) and sends
REQUESTS requests. Afterwards the proxy's metrics say how many backend connections it made and
how many requests reused one; the bound to meet is
shards x ceil(concurrent streams / the backend's max_concurrent_streams). With `--h1` the
clients speak HTTP/1.1 (`h2load --h1`, one request at a time per connection): their requests are
multiplexed onto the backend connections the same way.

Usage: python3 bench/h2_fanin.py [--clients 10000] [--requests 200000] [--h1]
"""
import argparse, math, os, re, shutil, subprocess, sys, tempfile, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from compare_direct import Server  # noqa: E402

BACKEND, FRONT, ADMIN, SHARDS, STREAMS = 18091, 8091, 9391, 2, 128

CONFIG = f"""version = 1
[global]
shards = {SHARDS}
max_connections = 9000
[admin]
bind = "127.0.0.1:{ADMIN}"
[[listener]]
name = "h2c"
bind = "127.0.0.1:{FRONT}"
backlog = 16384
http2 = {{ h2c = true }}
[[listener.route]]
path_prefix = "/"
backend = "app"
[backend.app]
servers = [ {{ address = "127.0.0.1:{BACKEND}" }} ]
protocol = "h2"
reuse = "always"
pool = {{ idle_timeout = "300s" }}
"""


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" ([\d.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coreplex", default=os.path.join(ROOT, "target/release/coreplex"))
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--h1", action="store_true", help="HTTP/1.1 clients")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cpfanin-")
    for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi"]:
        os.makedirs(os.path.join(tmp, d), exist_ok=True)
    text = open(os.path.join(HERE, "peers/nginx-backend-h2.conf")).read()
    open(os.path.join(tmp, "nginx.conf"), "w").write(
        text.replace("@PORT@", str(BACKEND)).replace("@DIR@", tmp))
    open(os.path.join(tmp, "coreplex.toml"), "w").write(CONFIG)
    backend = Server("nginx", [shutil.which("nginx") or "/usr/sbin/nginx", "-c",
                               os.path.join(tmp, "nginx.conf"), "-p", tmp], BACKEND)
    proxy = Server("coreplex", [a.coreplex, "run", "-c", os.path.join(tmp, "coreplex.toml"),
                                "--log-level", "warn"], FRONT)
    try:
        h1 = ["--h1"] if a.h1 else []
        out = subprocess.run(["h2load", "-t2", *h1, f"-c{a.clients}", "-m1", f"-n{a.requests}",
                              f"http://127.0.0.1:{FRONT}/"], capture_output=True, text=True,
                             timeout=600).stdout
        done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
        m = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/metrics").read().decode()
        server = f'{{backend="app",server="127.0.0.1:{BACKEND}"}}'
        new = metric(m, "coreplex_backend_connections_new_total" + server)
        reused = metric(m, "coreplex_backend_connections_reused_total" + server)
        bound = SHARDS * math.ceil(a.clients / STREAMS)
        kind = "HTTP/1.1" if a.h1 else "HTTP/2"
        print(f"{kind} clients {a.clients}, requests {a.requests}: {done.group(1)} succeeded, {done.group(2)} failed")
        print(f"backend connections made: {new:.0f} (bound: {SHARDS} shards x ceil({a.clients} / {STREAMS}) = {bound})")
        print(f"reuse: {reused:.0f} of {reused + new:.0f} requests = {reused / (reused + new):.4%}")
    finally:
        proxy.stop()
        backend.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
