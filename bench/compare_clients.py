#!/usr/bin/env python3
"""Load generator efficiency: coreplex-bench load vs wrk against the same server, same sitting.

The server (coreplex or nginx, `--server`) is pinned to core 0, each client to core 1 with one
thread; they run in turn (ABAB) for several rounds. Client CPU comes from getrusage of the finished
child (user + system); CPU per request = that / responses the client reports.

Usage: python3 bench/compare_clients.py [--server coreplex|nginx] [--rounds 3] [--duration 10] [--conns 100]
"""
import argparse, json, os, re, resource, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare_direct import Server  # noqa: E402


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_wrk(port, conns, duration):
    c0 = child_cpu()
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{duration}s",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
    cpu = child_cpu() - c0
    n = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"requests": n, "rps": rps, "cpu": cpu}


def run_bench(binary, port, conns, duration):
    c0 = child_cpu()
    out = subprocess.run(["taskset", "-c", "1", binary, "load", f"http://127.0.0.1:{port}/", "-c", str(conns),
                          "-t", "1", "-d", f"{duration}s", "--cpus", "1", "--json"],
                         capture_output=True, text=True).stdout
    cpu = child_cpu() - c0
    r = json.loads(out)
    return {"requests": r["answered"], "rps": r["requests_per_sec"], "cpu": cpu}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="coreplex", choices=["coreplex", "nginx"])
    ap.add_argument("--coreplex", default="target/release/coreplex")
    ap.add_argument("--bench", default="target/release/coreplex-bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", type=int, default=100)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cpclients-")
    if a.server == "coreplex":
        argv, port = (["taskset", "-c", "0", os.path.abspath(a.coreplex), "run", "-c",
                       os.path.join(HERE, "configs", "direct.toml"), "--cpus", "0", "--log-level", "warn"], 8090)
    else:
        conf = open(os.path.join(HERE, "peers", "nginx-direct.conf")).read().replace("@PORT@", "8091").replace("@DIR@", tmp)
        open(os.path.join(tmp, "nginx.conf"), "w").write(conf)
        argv, port = (["taskset", "-c", "0", shutil.which("nginx") or "/usr/sbin/nginx", "-c",
                       os.path.join(tmp, "nginx.conf"), "-p", tmp], 8091)
    server = Server(a.server, argv, port)
    res = {"wrk": [], "coreplex-bench": []}
    try:
        for rnd in range(a.rounds):
            order = ["wrk", "coreplex-bench"] if rnd % 2 == 0 else ["coreplex-bench", "wrk"]
            for client in order:
                r = (run_wrk(port, a.conns, a.duration) if client == "wrk"
                     else run_bench(os.path.abspath(a.bench), port, a.conns, a.duration))
                r["us_per_req"] = r["cpu"] * 1e6 / max(r["requests"], 1)
                res[client].append(r)
                print(f"  round={rnd} {client:<15} rps={r['rps']:>10.0f} client cpu/req={r['us_per_req']:.3f}us", flush=True)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(x["us_per_req"] for x in res["wrk"])
    print(f"\nserver: {a.server} (core 0), {a.conns} connections, {a.duration}s x {a.rounds} rounds, client on core 1")
    print("| client | requests/s (median) | client CPU us/request (median, min-max) | vs wrk |")
    print("|---|---|---|---|")
    for c, rs in res.items():
        cpu = [x["us_per_req"] for x in rs]
        print(f"| {c} | {statistics.median(x['rps'] for x in rs):,.0f} | {statistics.median(cpu):.3f} "
              f"({min(cpu):.3f}-{max(cpu):.3f}) | {statistics.median(cpu) / base:.2f}x |")


if __name__ == "__main__":
    main()
