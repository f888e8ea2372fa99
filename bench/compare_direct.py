#!/usr/bin/env python3
"""Direct-response benchmark: coreplex vs nginx `return 200`, side by side, same core.

Each server runs alone, pinned to core 0 (coreplex: one shard, --cpus 0; nginx: one worker); wrk
runs pinned to core 1 with one thread. For each scenario (connections x pipelining) the servers are
measured in turn (ABAB...) for several rounds. Server CPU time comes from /proc/PID/stat (utime +
stime of the whole process) over each run; CPU per request = that time / requests wrk completed.

Usage: python3 bench/compare_direct.py [--coreplex target/release/coreplex] [--duration 10]
       [--rounds 3] [--conns 100,1000] [--pipeline 1,16] [--access-log]
"""
import argparse, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except FileNotFoundError:
            pass
    return total / TICK


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]
    except Exception:
        return []


def wait_port(port, timeout=10):
    import socket
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


class Server:
    def __init__(self, name, argv, port, cwd=None):
        self.name, self.port = name, port
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd,
                                     start_new_session=True)
        wait_port(port)
        time.sleep(0.3)
        self.pids = [self.proc.pid] + children(self.proc.pid)

    def cpu(self):
        return cpu_seconds(self.pids)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except Exception:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def run_wrk(port, conns, duration, pipeline):
    argv = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency",
            f"http://127.0.0.1:{port}/"]
    if pipeline > 1:
        argv[6:6] = ["-s", os.path.join(HERE, "wrk", "pipeline.lua")]
        argv += ["--", str(pipeline)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    mult = {"us": 1, "ms": 1000, "s": 1_000_000}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    # wrk times only the first response of a pipelined batch: no latency figures then.
    p99_us = float(p99.group(1)) * mult if pipeline == 1 else float("nan")
    return {"requests": reqs, "rps": rps, "p99_us": p99_us,
            "non2xx": int(errors.group(1)) if errors else 0, "socket_errors": sock.group(1) if sock else ""}


def p99_text(rs):
    v = statistics.median(x["p99_us"] for x in rs)
    return "n/a (wrk cannot time pipelined requests)" if v != v else f"{v:.0f} us"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coreplex", default="target/release/coreplex")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", default="100,1000")
    ap.add_argument("--pipeline", default="1,16")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--access-log", action="store_true",
                    help="nginx writes its access log (combined format) and coreplex is measured with and without "
                         "an access log (haproxy format), all to files in a temporary directory")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=CONFIG: also measure coreplex with another config (same port 8090)")
    a = ap.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"{tool} is missing: run tests/setup.sh")
    tmp = tempfile.mkdtemp(prefix="cpbench-")
    conf = open(os.path.join(HERE, "peers", "nginx-direct.conf")).read()
    conf = conf.replace("@PORT@", "8091").replace("@DIR@", tmp)
    if a.access_log:
        conf = conf.replace("access_log off;", f"access_log {tmp}/nginx-access.log;")
        logged = open(os.path.join(HERE, "configs", "direct.toml")).read().replace(
            'bind = "127.0.0.1:8090"',
            f'bind = "127.0.0.1:8090"\naccess_log = {{ path = "{tmp}/coreplex-access.log", format = "haproxy" }}')
        open(os.path.join(tmp, "logged.toml"), "w").write(logged)
        a.variant.append(f"coreplex+log={tmp}/logged.toml")
    nconf = os.path.join(tmp, "nginx.conf")
    open(nconf, "w").write(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    servers = {
        "coreplex": (["taskset", "-c", "0", os.path.abspath(a.coreplex), "run", "-c",
                      os.path.join(HERE, "configs", "direct.toml"), "--cpus", "0", "--log-level", "warn"], 8090),
        "nginx": (["taskset", "-c", "0", nginx, "-c", nconf, "-p", tmp], 8091),
    }
    for v in a.variant:
        name, cfg = v.split("=", 1)
        servers[name] = (["taskset", "-c", "0", os.path.abspath(a.coreplex), "run", "-c", os.path.abspath(cfg),
                          "--cpus", "0", "--log-level", "warn"], 8090)
    results = {}
    scenarios = [(int(c), int(p)) for p in a.pipeline.split(",") for c in a.conns.split(",")]
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.uname().release} duration={a.duration}s rounds={a.rounds}", flush=True)
    for conns, pipe in scenarios:
        for rnd in range(a.rounds):
            order = list(servers) if rnd % 2 == 0 else list(reversed(servers))
            for name in order:
                argv, port = servers[name]
                s = Server(name, argv, port)
                try:
                    if a.warmup:
                        run_wrk(port, conns, a.warmup, pipe)
                    c0 = s.cpu()
                    r = run_wrk(port, conns, a.duration, pipe)
                    c1 = s.cpu()
                finally:
                    s.stop()
                r["cpu_us_per_req"] = (c1 - c0) * 1e6 / max(r["requests"], 1)
                r["cpu_util"] = (c1 - c0) / a.duration
                results.setdefault((conns, pipe, name), []).append(r)
                print(f"  c={conns:<5} pipeline={pipe:<3} round={rnd} {name:<9} rps={r['rps']:>10.0f} "
                      f"cpu/req={r['cpu_us_per_req']:.3f}us util={r['cpu_util']:.2f} p99={r['p99_us']:.0f}us "
                      f"non2xx={r['non2xx']} {r['socket_errors']}", flush=True)
    print()
    print("| connections | pipeline | server | requests/s (median) | server CPU us/request (median, min-max) | p99 (median) | CPU ratio vs nginx |")
    print("|---|---|---|---|---|---|---|")
    for conns, pipe in scenarios:
        base = statistics.median(x["cpu_us_per_req"] for x in results[(conns, pipe, "nginx")])
        for name in servers:
            rs = results[(conns, pipe, name)]
            cpu = [x["cpu_us_per_req"] for x in rs]
            med = statistics.median(cpu)
            print(f"| {conns} | {pipe} | {name} | {statistics.median(x['rps'] for x in rs):,.0f} | "
                  f"{med:.3f} ({min(cpu):.3f}-{max(cpu):.3f}) | {p99_text(rs)} | "
                  f"{med / base:.2f}x |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
