#!/usr/bin/env bash
# Bytes per idle keep-alive connection, coreplex vs nginx, at 1k/5k/10k/19k connections.
# For each count a fresh server is started, pinned to core 0; coreplex-bench (core 1) opens the
# connections from 127.0.0.2..5, sends one request on each (64 in flight at a time) and keeps them
# idle, then compares the server's RSS and the kernel's slab + TCP memory with the figures taken
# before the connections were opened.
# Usage: bench/memprobe.sh [COUNTS]   (default 1000,5000,10000,19000; needs release builds)
set -euo pipefail
cd "$(dirname "$0")/.."
counts=${1:-1000,5000,10000,19000}
bin=target/release/coreplex
benchbin=target/release/coreplex-bench
[ -x "$bin" ] && [ -x "$benchbin" ] || { echo "build first: cargo build --release -p coreplex -p coreplex-bench" >&2; exit 1; }
tmp=$(mktemp -d /tmp/cpmem-XXXXXX)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; exit 1; }
sed -e "s#@PORT@#8091#; s#@DIR@#$tmp#g" bench/peers/nginx-direct.conf > "$tmp/nginx.conf"

probe() { # name port pid-to-measure
    taskset -c 1 "$benchbin" memprobe --pid "$3" --target "127.0.0.1:$2" --counts "$n" --json \
        | sed "s/^{/{\"server\":\"$1\",/"
}
for n in ${counts//,/ }; do
    taskset -c 0 "$bin" run -c bench/configs/direct.toml --cpus 0 --log-level warn & server=$!
    wait_port 8090; sleep 0.3
    probe coreplex 8090 "$server"
    kill "$server"; wait "$server" || true; server=""

    taskset -c 0 nginx -c "$tmp/nginx.conf" -p "$tmp" 2>/dev/null & server=$!
    wait_port 8091; sleep 0.3
    probe nginx 8091 "$(pgrep -P "$server" | head -1)"
    kill "$server"; wait "$server" || true; server=""
    sleep 1
done
