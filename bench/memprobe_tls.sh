#!/usr/bin/env bash
# Bytes per idle TLS connection, coreplex vs nginx vs haproxy, at 1k/5k/10k/19k connections.
# As bench/memprobe.sh, over TLS 1.3 (ECDSA P-256, X25519 or X25519MLKEM768 as each server prefers):
# each connection completes a handshake and one request, then idles; the client drops its own TLS
# state and keeps the socket. haproxy's config allows 9,900 connections, so it is probed up to that.
# Usage: bench/memprobe_tls.sh [COUNTS]   (default 1000,5000,10000,19000; needs release builds)
set -euo pipefail
cd "$(dirname "$0")/.."
counts=${1:-1000,5000,10000,19000}
bin=target/release/coreplex
benchbin=target/release/coreplex-bench
[ -x "$bin" ] && [ -x "$benchbin" ] || { echo "build first: cargo build --release -p coreplex -p coreplex-bench" >&2; exit 1; }
tmp=$(mktemp -d /tmp/cpmemtls-XXXXXX)
chmod 755 "$tmp"
certs="$PWD/examples/certs"
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; exit 1; }
sed -e "s#@CERTS@#$certs#g; s#@MIB@#x#" bench/configs/tls.toml > "$tmp/coreplex.toml"
sed -e "s#@PORT@#8443#; s#@PLAIN@#8090#; s#@DIR@#$tmp#g; s#@CERTS@#$certs#g" bench/peers/nginx-tls.conf > "$tmp/nginx.conf"
sed -e "s#@PORT@#8443#; s#@PLAIN@#8090#; s#@DIR@#$tmp#g" bench/peers/haproxy-tls.cfg > "$tmp/haproxy.cfg"
for stem in ecdsa rsa; do cat "$certs/$stem.pem" "$certs/$stem.key" > "$tmp/$stem.pem"; done

probe() { # name pid-to-measure
    taskset -c 1 "$benchbin" memprobe --tls --pid "$2" --target 127.0.0.1:8443 --counts "$n" --json \
        | sed "s/^{/{\"server\":\"$1\",/"
}
for n in ${counts//,/ }; do
    taskset -c 0 "$bin" run -c "$tmp/coreplex.toml" --cpus 0 --log-level warn & server=$!
    wait_port 8443; sleep 0.3
    probe coreplex "$server"
    kill "$server"; wait "$server" || true; server=""

    taskset -c 0 nginx -c "$tmp/nginx.conf" -p "$tmp" 2>/dev/null & server=$!
    wait_port 8443; sleep 0.3
    probe nginx "$(pgrep -P "$server" | head -1)"
    kill "$server"; wait "$server" || true; server=""

    if [ "$n" -le 9900 ]; then
        taskset -c 0 haproxy -f "$tmp/haproxy.cfg" -db 2>/dev/null & server=$!
        wait_port 8443; sleep 0.3
        probe haproxy "$server"
        kill "$server"; wait "$server" || true; server=""
    fi
    sleep 1
done
