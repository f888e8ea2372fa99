#!/usr/bin/env python3
"""TLS benchmarks: coreplex vs nginx vs haproxy (OpenSSL 3.0), side by side, same core, and bare
rustls in memory as the yardstick.

Each server runs alone, pinned to core 0 (coreplex: one shard, --cpus 0; nginx: one worker;
haproxy: one thread) with the same certificates (examples/certs: ECDSA P-256 and RSA-2048, each
server choosing by what the client offers) and stateless tickets; the load is `coreplex-bench
load` pinned to core 1. Server CPU = utime + stime of the server process from /proc/PID/stat over
each run. Scenarios:

- handshakes: a new connection per request (`--reconnect`), full (`--no-resume`) or resumed, per
  version / certificate / key-exchange group. The yardstick is a bare rustls server over the same
  TCP path (`coreplex-bench tls-bare --serve`: blocking, one connection at a time, same
  certificates and tickets), so CPU per connection compares directly. Also shown: CPU per
  connection minus the same server's CPU per plaintext connection (`plain reconnect`), beside
  `coreplex-bench tls-bare` (rustls alone, in memory, no kernel work).
- keep-alive: requests over established TLS 1.3 connections, CPU per request.
- 1 MiB download over TLS 1.3 keep-alive (coreplex and nginx; haproxy's `http-request return`
  cannot hold 1 MiB): MiB/s per server CPU second.

Usage: python3 bench/compare_tls.py [--rounds 3] [--duration 5] [--only NAME,...]
       python3 bench/compare_tls.py --s-time --rounds 2   (the cross-check with openssl s_time)
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from compare_direct import Server  # noqa: E402

TLS, PLAIN = 8443, 8090
K = ["-k", "--sni", "localhost"]
FULL = ["--reconnect", "--no-resume", "-c", "10"]
RESUMED = ["--reconnect", "-c", "10"]
SCENARIOS = [
    # name, url, load arguments, what a unit is, servers (None: all)
    ("plain reconnect", f"http://127.0.0.1:{PLAIN}/", ["--reconnect", "-c", "10"], "connection", None),
    ("tls13 ecdsa x25519 full", "https://127.0.0.1:8443/",
     FULL + K + ["--tls-version", "1.3", "--tls-sig", "ecdsa", "--groups", "x25519"], "handshake", None),
    ("tls13 ecdsa x25519mlkem768 full", "https://127.0.0.1:8443/",
     FULL + K + ["--tls-version", "1.3", "--tls-sig", "ecdsa", "--groups", "x25519mlkem768"], "handshake",
     ["coreplex"]),
    ("tls13 rsa2048 x25519 full", "https://127.0.0.1:8443/",
     FULL + K + ["--tls-version", "1.3", "--tls-sig", "rsa", "--groups", "x25519"], "handshake", None),
    # TLS 1.2 with ECDSA lists P-256 after X25519: OpenSSL (nginx, haproxy) serves an ECDSA
    # certificate over TLS 1.2 only when its curve is among the client's groups (RFC 4492).
    ("tls12 ecdsa x25519 full", "https://127.0.0.1:8443/",
     FULL + K + ["--tls-version", "1.2", "--tls-sig", "ecdsa", "--groups", "x25519,secp256r1"], "handshake", None),
    ("tls12 rsa2048 x25519 full", "https://127.0.0.1:8443/",
     FULL + K + ["--tls-version", "1.2", "--tls-sig", "rsa", "--groups", "x25519"], "handshake", None),
    ("tls12 rsa2048 x25519 resumed", "https://127.0.0.1:8443/",
     RESUMED + K + ["--tls-version", "1.2", "--tls-sig", "rsa", "--groups", "x25519"], "handshake", None),
    ("tls13 ecdsa x25519 resumed", "https://127.0.0.1:8443/",
     RESUMED + K + ["--tls-version", "1.3", "--tls-sig", "ecdsa", "--groups", "x25519"], "handshake", None),
    ("tls13 keep-alive 100 conns", "https://127.0.0.1:8443/",
     ["-c", "100"] + K + ["--tls-version", "1.3", "--tls-sig", "ecdsa", "--groups", "x25519"], "request", None),
    ("tls13 1 MiB download 4 conns", "https://127.0.0.1:8443/1m",
     ["-c", "4"] + K + ["--tls-version", "1.3", "--tls-sig", "ecdsa", "--groups", "x25519"], "MiB",
     ["coreplex", "nginx"]),
]
BARE = {  # scenario -> tls-bare case
    "tls13 ecdsa x25519 full": "tls13 ecdsa-p256 x25519 full",
    "tls13 ecdsa x25519mlkem768 full": "tls13 ecdsa-p256 x25519mlkem768 full",
    "tls13 rsa2048 x25519 full": "tls13 rsa2048 x25519 full",
    "tls12 ecdsa x25519 full": "tls12 ecdsa-p256 x25519 full",
    "tls12 rsa2048 x25519 full": "tls12 rsa2048 x25519 full",
    "tls12 rsa2048 x25519 resumed": "tls12 rsa2048 x25519 resumed",
    "tls13 ecdsa x25519 resumed": "tls13 ecdsa-p256 x25519 resumed",
}


def load(bench, url, args, seconds):
    argv = ["taskset", "-c", "1", bench, "load", url, "-d", f"{seconds}s", "--cpus", "1", "--json"] + args
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def s_time(argvs, rounds, seconds):
    """The cross-check: `openssl s_time -new` (one connection at a time, full TLS 1.3 handshakes,
    a GET each) as the load instead of coreplex-bench; server CPU per connection."""
    import re
    for rnd in range(rounds):
        order = list(argvs) if rnd % 2 == 0 else list(reversed(list(argvs)))
        for name in order:
            s = Server(name, argvs[name], TLS)
            try:
                c0 = s.cpu()
                out = subprocess.run(["taskset", "-c", "1", "openssl", "s_time", "-connect", f"127.0.0.1:{TLS}",
                                      "-new", "-time", str(seconds), "-www", "/", "-tls1_3"],
                                     capture_output=True, text=True, timeout=seconds + 60).stdout
                c1 = s.cpu()
            finally:
                s.stop()
            n = int(re.search(r"(\d+) connections in [\d.]+ real", out).group(1))
            print(f"  s_time round={rnd} {name:<9} {n / seconds:>7.0f} handshake/s "
                  f"server CPU {(c1 - c0) * 1e6 / max(n, 1):6.1f} us per connection", flush=True)


def servers(a, tmp, certs):
    mib = "x" * (1 << 20)
    cfg = open(os.path.join(HERE, "configs", "tls.toml")).read().replace("@CERTS@", certs).replace("@MIB@", mib)
    cpath = os.path.join(tmp, "coreplex.toml")
    open(cpath, "w").write(cfg)
    os.makedirs(os.path.join(tmp, "www"), exist_ok=True)
    open(os.path.join(tmp, "www", "1m"), "w").write(mib)
    n = open(os.path.join(HERE, "peers", "nginx-tls.conf")).read()
    n = n.replace("@PORT@", str(TLS)).replace("@PLAIN@", str(PLAIN)).replace("@DIR@", tmp).replace("@CERTS@", certs)
    npath = os.path.join(tmp, "nginx.conf")
    open(npath, "w").write(n)
    for stem in ("ecdsa", "rsa"):
        with open(os.path.join(tmp, f"{stem}.pem"), "w") as f:
            f.write(open(os.path.join(certs, f"{stem}.pem")).read())
            f.write(open(os.path.join(certs, f"{stem}.key")).read())
    h = open(os.path.join(HERE, "peers", "haproxy-tls.cfg")).read()
    h = h.replace("@PORT@", str(TLS)).replace("@PLAIN@", str(PLAIN)).replace("@DIR@", tmp)
    hpath = os.path.join(tmp, "haproxy.cfg")
    open(hpath, "w").write(h)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    all_ = {
        "coreplex": ["taskset", "-c", "0", os.path.abspath(a.coreplex), "run", "-c", cpath, "--cpus", "0",
                     "--log-level", "warn"],
        "nginx": ["taskset", "-c", "0", nginx, "-c", npath, "-p", tmp],
        "haproxy": ["taskset", "-c", "0", haproxy, "-f", hpath, "-db"],
        # bare rustls over TCP (handshake scenarios only: one connection at a time, then close)
        "rustls": ["taskset", "-c", "0", os.path.abspath(a.bench), "tls-bare", "--serve", f"127.0.0.1:{TLS}",
                   "--cpu", "0", "--certs", certs],
    }
    return {k: v for k, v in all_.items() if k in a.servers.split(",")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coreplex", default=os.path.join(ROOT, "target/release/coreplex"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "target/release/coreplex-bench"))
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--servers", default="coreplex,rustls,nginx,haproxy")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--s-time", action="store_true",
                    help="only the cross-check: openssl s_time -new as the load (TLS 1.3 full handshakes)")
    a = ap.parse_args()
    certs = os.path.join(ROOT, "examples", "certs")
    tmp = tempfile.mkdtemp(prefix="cptls-")
    os.chmod(tmp, 0o755)  # nginx's worker (not root) reads the 1 MiB file under it
    argvs = servers(a, tmp, certs)
    if a.s_time:
        s_time(argvs, a.rounds, a.duration)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.uname().release} duration={a.duration}s rounds={a.rounds}",
          flush=True)
    bare = subprocess.run(["taskset", "-c", "0", a.bench, "tls-bare", "-d", "3s", "--cpu", "0", "--json"],
                          capture_output=True, text=True, check=True).stdout
    bare = {c["name"]: c for c in json.loads(bare)}
    for name, c in bare.items():
        print(f"  bare rustls {name:<40} server {c['server_us']:.1f} us client {c['client_us']:.1f} us", flush=True)
    results = {}
    wanted = [s for s in SCENARIOS if not a.only or s[0] in a.only.split(",")]
    for name, url, args, unit, only in wanted:
        names = [s for s in argvs if (only is None or s in only) and (s != "rustls" or unit == "handshake")]
        for rnd in range(a.rounds):
            order = names if rnd % 2 == 0 else list(reversed(names))
            for srv in order:
                port = PLAIN if url.startswith("http://") else TLS
                s = Server(srv, argvs[srv], port)
                try:
                    if a.warmup:
                        load(a.bench, url, args, a.warmup)
                    c0 = s.cpu()
                    r = load(a.bench, url, args, a.duration)
                    c1 = s.cpu()
                finally:
                    s.stop()
                units = r["bytes_in"] / (1 << 20) if unit == "MiB" else r["answered"]
                r["cpu_us_per_unit"] = (c1 - c0) * 1e6 / max(units, 1)
                r["units_per_s"] = units / r["duration_s"]
                r["util"] = (c1 - c0) / r["duration_s"]
                errs = sum(r["errors"].values())
                r["errs"] = errs
                results.setdefault((name, srv), []).append(r)
                print(f"  {name:<32} round={rnd} {srv:<9} {r['units_per_s']:>9.0f} {unit}/s "
                      f"cpu/{unit}={r['cpu_us_per_unit']:.1f}us util={r['util']:.2f} "
                      f"full={r['handshakes_full']} resumed={r['handshakes_resumed']} errors={errs}", flush=True)
    print()
    print("| scenario | server | per second | server CPU us per unit (median, min-max) | "
          "vs bare rustls over TCP | minus plaintext connection | bare rustls in memory | vs in memory | "
          "vs nginx | vs haproxy | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    med = {k: statistics.median(x["cpu_us_per_unit"] for x in v) for k, v in results.items()}
    for name, url, args, unit, only in wanted:
        for srv in argvs:
            rs = results.get((name, srv))
            if not rs:
                continue
            cpu = [x["cpu_us_per_unit"] for x in rs]
            m = med[(name, srv)]
            net, vs_bare, bare_us = "", "", ""
            handshake = unit == "handshake"
            if handshake and ("plain reconnect", srv) in med:
                net_v = m - med[("plain reconnect", srv)]
                net = f"{net_v:.1f}"
                if name in BARE:
                    b = bare[BARE[name]]["server_us"]
                    bare_us = f"{b:.1f}"
                    vs_bare = f"{net_v / b:.2f}x"
            ratio = lambda peer: f"{m / med[(name, peer)]:.2f}x" if (name, peer) in med else ""
            print(f"| {name} | {srv} | {statistics.median(x['units_per_s'] for x in rs):,.0f} {unit}/s | "
                  f"{m:.1f} ({min(cpu):.1f}-{max(cpu):.1f}) per {unit} | {ratio('rustls')} | {net} | {bare_us} | "
                  f"{vs_bare} | "
                  f"{ratio('nginx')} | {ratio('haproxy')} | {sum(x['errs'] for x in rs)} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
