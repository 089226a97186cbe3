#!/usr/bin/env bash
# Throughput of the stacks of `examples/stack_server.rs` under wrk, on loopback: every stack
# under axum and under plain hyper, interleaved over ROUNDS rounds so that noise from other
# processes hits every stack alike. Prints, per cell, the median requests/s and the median CPU
# time of the server per request (its user + system time over the run, from /proc, divided by
# wrk's requests), each with its ratio to the bare server serving the same bytes (`/bare` for
# the miss path and the tower stack, `/bare-hit` for the hit path). On a shared machine the
# CPU per request is the steadier figure: it does not move when other processes take cores.
#
#   scripts/wrk-stack.sh             # ROUNDS=5 DURATION=5s CONNECTIONS=64 THREADS=1
#   nice -n -10 scripts/wrk-stack.sh # as measured for the README
#   BASELINE=/tmp/stack_server.old scripts/wrk-stack.sh
#
# BASELINE: another build of the example (an older commit's), run beside this one and measured
# in the same interleaved rounds; its rows are marked `(baseline)`, with their ratios to its
# own bare server.
#
# Every request carries `Accept-Encoding: ACCEPT` (a browser's by default), so the cache and
# the compression layer both negotiate; the 13-byte answers are under every compression
# threshold. wrk and the server share the machine's cores: absolute figures depend on the
# machine, the ratios inside one run are what this measures.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
PORT=${PORT:-3005}
ACCEPT=${ACCEPT:-gzip, deflate, br, zstd}
BASELINE=${BASELINE:-}
command -v wrk >/dev/null || { echo "error: wrk missing (apt-get install -y wrk)" >&2; exit 1; }

cargo build --release --example stack_server >/dev/null 2>&1
declare -A pid port
builds=(current)
PORT=$PORT target/release/examples/stack_server >/dev/null &
pid[current]=$!
port[current]=$PORT
if [ -n "$BASELINE" ]; then
    builds+=(baseline)
    PORT=$((PORT + 10)) "$BASELINE" >/dev/null &
    pid[baseline]=$!
    port[baseline]=$((PORT + 10))
fi
trap 'for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
for build in "${builds[@]}"; do
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:${port[$build]}/bare" && break
        sleep 0.1
    done
done

stacks=(bare perf-miss bare-hit perf-hit tower)
# The bare server each stack is compared with: the one serving the same bytes.
declare -A base=([bare]=bare [perf-miss]=bare [bare-hit]=bare-hit [perf-hit]=bare-hit [tower]=bare)
declare -A rps cpu
tick_us=$((1000000 / $(getconf CLK_TCK)))
url() { # $1 build, $2 server (axum, hyper), $3 stack
    local p=${port[$1]} i
    if [ "$2" = axum ]; then
        echo "http://127.0.0.1:$p/$3"
        return
    fi
    for i in "${!stacks[@]}"; do
        [ "${stacks[$i]}" = "$3" ] && echo "http://127.0.0.1:$((p + i + 1))/$3"
    done
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for round in $(seq "$ROUNDS"); do
    for kind in axum hyper; do
        for stack in "${stacks[@]}"; do
            for build in "${builds[@]}"; do
                before=$(cpu_ticks "${pid[$build]}")
                out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
                    -H "Accept-Encoding: $ACCEPT" "$(url "$build" "$kind" "$stack")" 2>&1)
                ticks=$(($(cpu_ticks "${pid[$build]}") - before))
                r=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
                n=$(awk '/requests in/ {print $1}' <<<"$out")
                c=$(python3 -c "print(f'{$ticks * $tick_us / $n:.2f}')")
                rps[$build,$kind,$stack]+="$r "
                cpu[$build,$kind,$stack]+="$c "
                echo "round $round $build $kind $stack: $r req/s, $c us CPU/request" >&2
            done
        done
    done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "| stack | axum req/s | ratio | axum CPU µs/req | ratio | hyper req/s | ratio | hyper CPU µs/req | ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for build in "${builds[@]}"; do
    for stack in "${stacks[@]}"; do
        line="| \`$stack\` (vs \`${base[$stack]}\`)"
        [ "$build" = baseline ] && line+=" (baseline)"
        line+=" |"
        for kind in axum hyper; do
            m=$(median "${rps[$build,$kind,$stack]}")
            b=$(median "${rps[$build,$kind,${base[$stack]}]}")
            c=$(median "${cpu[$build,$kind,$stack]}")
            cb=$(median "${cpu[$build,$kind,${base[$stack]}]}")
            # CPU ratio as a throughput ratio: bare's CPU per request over this stack's.
            line+=$(python3 -c "print(f' {$m:.0f} | {$m/$b:.2f} | {$c:.2f} | {$cb/$c:.2f} |')")
        done
        echo "$line"
    done
done
