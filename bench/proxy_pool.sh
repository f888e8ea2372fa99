#!/usr/bin/env bash
# Backend connections and reuse ratio of the proxy under many client connections.
# For each reuse mode: an nginx backend and coreplex (one shard, pool max_idle_per_server = POOL)
# on CPU 0; `coreplex-bench hold` keeps CONNS client connections (several processes, source
# addresses 127.0.0.2..), a fraction of them sending a request every second; mid-run and at the
# end it counts the proxy's established backend connections (ss) and the reuse ratio over the
# steady-state window (difference of two /metrics scrapes).
# Usage: bench/proxy_pool.sh [CONNS] [POOL] [MODES...]   (defaults: 10000 1000 safe always)
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${1:-10000}
POOL=${2:-1000}
shift 2 2>/dev/null || true
MODES=${*:-safe always}
BIN=target/release/coreplex
BENCH=target/release/coreplex-bench
[ -x "$BIN" ] && [ -x "$BENCH" ] || cargo build --release -p coreplex -p coreplex-bench
DIR=$(mktemp -d /tmp/cpx-pool-XXXX)
BPORT=18095 FPORT=8095 APORT=9095
sed "s|@PORT@|$BPORT|; s|@DIR@|$DIR|g" bench/peers/nginx-direct.conf > "$DIR/nginx.conf"
taskset -c 0 /usr/sbin/nginx -c "$DIR/nginx.conf" -p "$DIR" >/dev/null 2>&1 &
NGINX_PID=$!
cleanup() { kill -TERM "$NGINX_PID" 2>/dev/null || true; [ -n "${CPX:-}" ] && kill "$CPX" 2>/dev/null || true; }
trap cleanup EXIT
sleep 0.5
backend_conns() { ss -Htn state established "( dport = :$BPORT )" | wc -l; }
metric() { curl -s "http://127.0.0.1:$APORT/metrics" | awk -v k="$1" 'index($0, k" ")==1 || index($0, k"{")==1 {s+=$NF} END {print s+0}'; }
echo "| reuse | client conns | requests/s | backend conns mid-run | backend conns at end | new conns (steady state) | reused (steady state) | reuse ratio |"
echo "|---|---|---|---|---|---|---|---|"
for mode in $MODES; do
  cat > "$DIR/proxy.toml" <<CFG
version = 1
[global]
shards = 1
max_connections = 19000
[admin]
bind = "127.0.0.1:$APORT"
[[listener]]
bind = "127.0.0.1:$FPORT"
[[listener.route]]
path_prefix = "/"
backend = "app"
[backend.app]
servers = [{ address = "127.0.0.1:$BPORT" }]
reuse = "$mode"
pool = { max_idle_per_server = $POOL, idle_timeout = "300s" }
CFG
  taskset -c 0 "$BIN" run -c "$DIR/proxy.toml" >"$DIR/cpx-$mode.log" 2>&1 &
  CPX=$!
  sleep 0.7
  taskset -c 1 "$BENCH" hold --target 127.0.0.1:$FPORT --conns "$CONNS" --duration 30 --sources 8 \
    --active-fraction 0.5 --interval 1 --processes 2 >"$DIR/hold-$mode.log" 2>&1 &
  HOLD=$!
  sleep 12
  n1=$(metric coreplex_backend_connections_new_total); r1=$(metric coreplex_backend_connections_reused_total)
  sleep 10
  mid=$(backend_conns)
  n2=$(metric coreplex_backend_connections_new_total); r2=$(metric coreplex_backend_connections_reused_total)
  wait "$HOLD" || true
  end=$(backend_conns)
  new=$((n2 - n1)); reused=$((r2 - r1))
  ratio=$(awk -v n="$new" -v r="$reused" 'BEGIN { if (n + r > 0) printf "%.4f", r / (n + r); else print "n/a" }')
  rps=$(awk -v n="$new" -v r="$reused" 'BEGIN { printf "%.0f", (n + r) / 10 }')
  echo "| $mode | $CONNS | $rps | $mid | $end | $new | $reused | $ratio |"
  kill "$CPX"; wait "$CPX" 2>/dev/null || true; CPX=
done
