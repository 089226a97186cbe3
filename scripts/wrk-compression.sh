#!/usr/bin/env bash
# Throughput of the compression stacks of `examples/compression_server.rs` under wrk, on
# loopback: every route with gzip, br and zstd, interleaved over ROUNDS rounds so that noise
# from other processes hits every stack alike; prints the median requests/s per cell, the ratio
# to tower-http's `CompressionLayer` for the same coding, and the bytes per response (wrk's
# transfer over its requests, headers included).
#
#   scripts/wrk-compression.sh                 # ROUNDS=3 DURATION=5s CONNECTIONS=64
#
# wrk and the server share the machine's cores: absolute figures depend on the machine, the
# ratios inside one run are what this measures.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-3003}
command -v wrk >/dev/null || { echo "error: wrk missing (apt-get install -y wrk)" >&2; exit 1; }

cargo build --release --example compression_server >/dev/null 2>&1
PORT=$PORT target/release/examples/compression_server >/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/plain" && break
    sleep 0.1
done

routes=(plain tower-http fixed adaptive cached)
codings=(gzip br zstd)
declare -A rps bytes
for round in $(seq "$ROUNDS"); do
    for route in "${routes[@]}"; do
        for coding in "${codings[@]}"; do
            [ "$route" = plain ] && [ "$coding" != gzip ] && continue
            out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" -H "Accept-Encoding: $coding" \
                "http://127.0.0.1:$PORT/$route" 2>&1)
            r=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
            n=$(awk '/requests in/ {print $1}' <<<"$out")
            t=$(awk '/requests in/ {print $5}' <<<"$out" | tr -d ',')
            b=$(python3 -c "
import re,sys
m=re.match(r'([0-9.]+)([KMG]?)B','$t')
v=float(m.group(1))*{'':1,'K':1024,'M':1024**2,'G':1024**3}[m.group(2)]
print(int(v/$n))")
            rps[$route,$coding]+="$r "
            bytes[$route,$coding]=$b
            echo "round $round $route $coding: $r req/s, $b bytes" >&2
        done
    done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {printf "%d", a[int((NR+1)/2)]}'; }
echo
echo "| stack | gzip req/s | br req/s | zstd req/s | bytes per response (gzip / br / zstd) |"
echo "|---|---:|---:|---:|---:|"
for route in "${routes[@]}"; do
    line="| \`/$route\` |"
    sizes=""
    for coding in "${codings[@]}"; do
        if [ "$route" = plain ]; then
            [ "$coding" = gzip ] && line+=" $(median "${rps[plain,gzip]}") |" || line+=" |"
            continue
        fi
        m=$(median "${rps[$route,$coding]}")
        base=$(median "${rps[tower-http,$coding]}")
        ratio=$(python3 -c "print(f'{$m/$base:.2f}')")
        line+=" $m (${ratio}x) |"
        sizes+="${bytes[$route,$coding]} / "
    done
    [ "$route" = plain ] && sizes="${bytes[plain,gzip]}" || sizes=${sizes% / }
    echo "$line $sizes |"
done
