#!/usr/bin/env bash
# The proxy's latency tail at 100 connections: coreplex, nginx and haproxy in turn (ROUNDS each,
# default 3), each proxy and the shared backend nginx pinned to core 0, coreplex-bench (one thread)
# on core 1, 2 s warm-up + 10 s; prints requests/s, p99, p99.9, p99.99 and max per run.
# Needs the release build: cargo build --release -p coreplex -p coreplex-bench
set -u
ROUNDS=${1:-3}
D=$(mktemp -d /tmp/coreplex-tail.XXXXXX); mkdir -p $D/b/body $D/b/proxy $D/b/fastcgi $D/b/uwsgi $D/b/scgi $D/n/body $D/n/proxy $D/n/fastcgi $D/n/uwsgi $D/n/scgi
B=$(cd "$(dirname "$0")" && pwd)
BIN=$B/../target/release
sed -e "s#@PORT@#18290#g" -e "s#@DIR@#$D/b#g" $B/peers/nginx-backend.conf > $D/backend.conf
sed -e "s#@PORT@#18291#g" -e "s#@BACKEND@#18290#g" -e "s#@DIR@#$D/n#g" $B/peers/nginx-proxy.conf > $D/nginx-proxy.conf
sed -e "s#@PORT@#18291#g" -e "s#@BACKEND@#18290#g" $B/peers/haproxy-proxy.cfg > $D/haproxy.cfg
sed -e "s#127.0.0.1:8091#127.0.0.1:18291#" -e "s#127.0.0.1:18090#127.0.0.1:18290#" $B/configs/proxy.toml > $D/coreplex.toml
taskset -c 0 nginx -c $D/backend.conf -p $D/b >/dev/null 2>&1 &
NB=$!
sleep 0.5
for r in $(seq $ROUNDS); do
  for p in coreplex nginx haproxy; do
    case $p in
      coreplex) taskset -c 0 $BIN/coreplex run --config $D/coreplex.toml >/dev/null 2>&1 & ;;
      nginx) taskset -c 0 nginx -c $D/nginx-proxy.conf -p $D/n >/dev/null 2>&1 & ;;
      haproxy) taskset -c 0 haproxy -f $D/haproxy.cfg -db >/dev/null 2>&1 & ;;
    esac
    P=$!
    sleep 0.8
    $BIN/coreplex-bench load -c 100 -d 2s --cpus 1 http://127.0.0.1:18291/ >/dev/null 2>&1
    $BIN/coreplex-bench load -c 100 -d 10s --cpus 1 --json http://127.0.0.1:18291/ > $D/out.json 2>/dev/null
    python3 -c "
import json; j=json.load(open('$D/out.json')); p=dict((round(q,5),v) for q,v in j['percentiles'])
print('%-8s round $r rps %7.0f p99 %6.2f p99.9 %6.2f p99.99 %6.2f max %6.2f ms errors %s' % ('$p', j['requests_per_sec'], p[0.99]/1000, p[0.999]/1000, p[0.9999]/1000, p[1.0]/1000, sum(j['errors'].values())))"
    kill $P; wait $P 2>/dev/null
    sleep 0.3
  done
done
kill $NB; wait $NB 2>/dev/null
rm -rf "$D"
