#!/usr/bin/env bash
# The fleet on one machine, to try: a Redis Cluster (3 masters, 1 replica each), 3 instances of
# the demo server sharing it (cache tier and rate limit through REDIS_URL=redis-cluster://...),
# and nginx in front, round robin. Everything listens on 127.0.0.1 and stops (by PID) on Ctrl-C
# or after FLEET_SECONDS (default 3600).
#
# Usage: examples/fleet.sh            (from anywhere; needs redis-server, redis-cli and nginx:
#                                      `apt-get install redis-server nginx`)
#   FLEET_PORT (8080): nginx; FLEET_APP_BASE (3001): the 3 instances from there;
#   FLEET_REDIS_BASE (7001): the 6 Redis nodes from there.
#   FLEET_DEBUG=1: a debug build instead of --release.
#
# Then:
#   curl -si localhost:8080/api/v1/properties/1 | grep -i cache-status   # three times: each
#                                           # instance answers once, from the origin or Redis
#   examples/fleet.sh kill-master           # in another terminal: a master dies, its replica
#                                           # takes over; requests go on being answered
set -euo pipefail
cd "$(dirname "$0")/.."

port="${FLEET_PORT:-8080}"
seconds="${FLEET_SECONDS:-3600}"
rb="${FLEET_REDIS_BASE:-7001}"
ab="${FLEET_APP_BASE:-3001}"
redis_ports=($rb $((rb + 1)) $((rb + 2)) $((rb + 3)) $((rb + 4)) $((rb + 5)))
app_ports=($ab $((ab + 1)) $((ab + 2)))
dir="${TMPDIR:-/tmp}/tower-perf-fleet"

if [ "${1:-}" = "kill-master" ]; then
    # The master of the cache's purge records (their slot), killed by the PID it wrote.
    live=""
    for p in "${redis_ports[@]}"; do redis-cli -p "$p" ping >/dev/null 2>&1 && { live=$p; break; }; done
    slot=$(redis-cli -p "$live" cluster keyslot "{tower-perf:cache:tower-perf}:gen")
    node=$(redis-cli -p "$live" cluster nodes | awk -v s="$slot" '
        $3 ~ /master/ && $3 !~ /fail/ {
            for (i = 9; i <= NF; i++) {
                n = split($i, r, "-"); lo = r[1]; hi = (n > 1) ? r[2] : r[1]
                if (s + 0 >= lo + 0 && s + 0 <= hi + 0) { split($2, a, "@"); sub(/.*:/, "", a[1]); print a[1] }
            }
        }')
    pid=$(cat "$dir/redis-$node.pid")
    echo "killing the Redis master on port $node (PID $pid)"
    kill -9 "$pid"
    exit 0
fi

for bin in redis-server redis-cli nginx; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] ||
        { echo "error: $bin is missing (apt-get install redis-server nginx)" >&2; exit 1; }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

profile=(--release)
bin_dir=target/release/examples
if [ -n "${FLEET_DEBUG:-}" ]; then profile=(); bin_dir=target/debug/examples; fi
cargo build "${profile[@]}" --example demo_server --features redis

rm -rf "$dir" && mkdir -p "$dir"
pids=()
stop() {
    echo "stopping the fleet"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap stop EXIT INT TERM

# --- Redis Cluster ----------------------------------------------------------------------------
for p in "${redis_ports[@]}"; do
    redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no \
        --cluster-enabled yes --cluster-config-file "nodes-$p.conf" \
        --cluster-node-timeout 2000 --dir "$dir" >"$dir/redis-$p.log" 2>&1 &
    pids+=($!)
    echo $! >"$dir/redis-$p.pid"
done
for p in "${redis_ports[@]}"; do
    for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
nodes=()
for p in "${redis_ports[@]}"; do nodes+=("127.0.0.1:$p"); done
timeout 60 redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log"
for _ in $(seq 300); do
    [ "$(redis-cli -p "${redis_ports[0]}" cluster info | tr -d '\r' | grep cluster_state)" = "cluster_state:ok" ] && break
    sleep 0.1
done
url="redis-cluster://127.0.0.1:${redis_ports[0]}?node=127.0.0.1:${redis_ports[1]}&node=127.0.0.1:${redis_ports[2]}"
echo "Redis Cluster: $url"

# --- the instances ----------------------------------------------------------------------------
for p in "${app_ports[@]}"; do
    PORT="$p" REDIS_URL="$url" "$bin_dir/demo_server" >"$dir/demo-$p.log" 2>&1 &
    pids+=($!)
done
for p in "${app_ports[@]}"; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/health" >/dev/null 2>&1 && break; sleep 0.1; done
done

# --- nginx, round robin -----------------------------------------------------------------------
upstreams=""
for p in "${app_ports[@]}"; do upstreams+="        server 127.0.0.1:$p;"$'\n'; done
cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream fleet {
$upstreams        keepalive 32;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://fleet;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$remote_addr;
        }
    }
}
EOF
"$nginx_bin" -c "$dir/nginx.conf" -p "$dir" &
pids+=($!)
sleep 0.5
echo "fleet: http://127.0.0.1:$port/ -> instances on ${app_ports[*]} (logs in $dir)"
echo "try:   for i in 1 2 3; do curl -s -o /dev/null -D - localhost:$port/api/v1/properties/1 | grep -i cache-status; done"
echo "stop with Ctrl-C (stops by itself after $seconds s)"
sleep "$seconds" &
pids+=($!)
wait $!
