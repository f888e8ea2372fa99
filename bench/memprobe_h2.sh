#!/usr/bin/env bash
# Bytes per idle HTTP/2 connection (h2c, prior knowledge), coreplex vs nginx vs haproxy, at
# 1k/5k/10k/19k connections. As bench/memprobe.sh, but each connection opens with the HTTP/2
# preface, exchanges SETTINGS, sends one GET and reads its response, then idles (the client keeps
# only the socket). haproxy's config allows 9,900 connections, so it is probed up to that.
# Usage: bench/memprobe_h2.sh [COUNTS]   (default 1000,5000,10000,19000; needs release builds)
set -euo pipefail
cd "$(dirname "$0")/.."
counts=${1:-1000,5000,10000,19000}
bin=target/release/coreplex
benchbin=target/release/coreplex-bench
[ -x "$bin" ] && [ -x "$benchbin" ] || { echo "build first: cargo build --release -p coreplex -p coreplex-bench" >&2; exit 1; }
tmp=$(mktemp -d /tmp/cpmemh2-XXXXXX)
chmod 755 "$tmp"
mkdir -p "$tmp"/{body,proxy,fastcgi,uwsgi,scgi}
certs="$PWD/examples/certs"
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; exit 1; }
sed -e "s#@CERTS@#$certs#g" bench/configs/h2.toml > "$tmp/coreplex.toml"
sed -e "s#@PORT@#8443#; s#@PLAIN@#8090#; s#@DIR@#$tmp#g; s#@CERTS@#$certs#g" bench/peers/nginx-h2.conf > "$tmp/nginx.conf"
sed -e "s#@PORT@#8443#; s#@PLAIN@#8090#; s#@DIR@#$tmp#g" bench/peers/haproxy-h2.cfg > "$tmp/haproxy.cfg"
cat "$certs/ecdsa.pem" "$certs/ecdsa.key" > "$tmp/ecdsa.pem"

probe() { # name pid-to-measure
    taskset -c 1 "$benchbin" memprobe --h2c --pid "$2" --target 127.0.0.1:8090 --counts "$n" --json \
        | sed "s/^{/{\"server\":\"$1\",/"
}
for n in ${counts//,/ }; do
    taskset -c 0 "$bin" run -c "$tmp/coreplex.toml" --cpus 0 --log-level warn & server=$!
    wait_port 8090; sleep 0.3
    probe coreplex "$server"
    kill "$server"; wait "$server" || true; server=""

    taskset -c 0 nginx -c "$tmp/nginx.conf" -p "$tmp" 2>/dev/null & server=$!
    wait_port 8090; sleep 0.3
    probe nginx "$(pgrep -P "$server" | head -1)"
    kill "$server"; wait "$server" || true; server=""

    if [ "$n" -le 9900 ]; then
        taskset -c 0 haproxy -f "$tmp/haproxy.cfg" -db 2>/dev/null & server=$!
        wait_port 8090; sleep 0.3
        probe haproxy "$server"
        kill "$server"; wait "$server" || true; server=""
    fi
    sleep 1
done
