#!/usr/bin/env bash
# TLS 1.3 ECDSA/X25519 full handshakes on coreplex, rustls' default suite order (the client's
# order wins: rustls clients put TLS13_AES_256_GCM_SHA384 first) against a configured list with
# TLS13_AES_128_GCM_SHA256 first (a configured list is the server's order). Server on core 0,
# coreplex-bench on core 1, 3 rounds ABAB of 1 s warm-up + 5 s; server CPU per handshake.
# Usage: bench/tls_suite_ab.sh   (needs release builds)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/coreplex
bench=target/release/coreplex-bench
tmp=$(mktemp -d /tmp/cpsuite-XXXXXX)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
sed -e "s#@CERTS@#$PWD/examples/certs#g; s#@MIB@#x#" bench/configs/tls.toml > "$tmp/default.toml"
sed -e 's#^min_version = "1.2"#min_version = "1.2"\ncipher_suites = ["TLS13_AES_128_GCM_SHA256", "TLS13_AES_256_GCM_SHA384", "TLS13_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]#' \
    "$tmp/default.toml" > "$tmp/aes128.toml"
load=(https://127.0.0.1:8443/ -k --sni localhost -c 10 --reconnect --no-resume --tls-version 1.3
      --tls-sig ecdsa --groups x25519 --cpus 1)
for r in 1 2 3; do
    for v in default aes128; do
        taskset -c 0 "$bin" run -c "$tmp/$v.toml" --cpus 0 --log-level warn >/dev/null 2>&1 & server=$!
        sleep 0.5
        taskset -c 1 "$bench" load "${load[@]}" -d 1s >/dev/null
        a=$(awk '{print $14+$15}' /proc/$server/stat)
        n=$(taskset -c 1 "$bench" load "${load[@]}" -d 5s --json | python3 -c "import json,sys; print(json.load(sys.stdin)['answered'])")
        b=$(awk '{print $14+$15}' /proc/$server/stat)
        kill "$server"; wait "$server" 2>/dev/null || true; server=""
        echo "round $r $v: $n handshakes, $(python3 -c "print(round(($b - $a) * 1e6 / $(getconf CLK_TCK) / $n, 1))") us per handshake"
    done
done
