#!/usr/bin/env bash
# Instructions per request of each stack of `examples/stack_server.rs`, counted by valgrind's
# callgrind: repeatable on a busy machine, where requests/s are not. The server runs under
# callgrind; for each route, WARMUP requests, then the counters are zeroed, N requests are sent
# on one keep-alive connection, and the counts are dumped. Prints instructions per request
# and the ratio to the bare server serving the same bytes (bare's count over the stack's: a
# throughput ratio when the server is CPU-bound), under axum and under plain hyper.
#
#   scripts/callgrind-stack.sh                 # N=2000, the release build of the example
#   BIN=/tmp/stack_server.old scripts/callgrind-stack.sh   # another build
#   ANNOTATE=perf-miss scripts/callgrind-stack.sh          # also the top functions of a route
#
# The dumps stay in OUT (default /tmp/callgrind-stack) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
WARMUP=${WARMUP:-200}
PORT=${PORT:-3105}
OUT=${OUT:-/tmp/callgrind-stack}
BIN=${BIN:-}
ANNOTATE=${ANNOTATE:-}
ACCEPT=${ACCEPT:-gzip, deflate, br, zstd}
command -v valgrind >/dev/null || { echo "error: valgrind missing (apt-get install -y valgrind)" >&2; exit 1; }

if [ -z "$BIN" ]; then
    cargo build --release --example stack_server >/dev/null 2>&1
    BIN=target/release/examples/stack_server
fi
rm -rf "$OUT" && mkdir -p "$OUT"
PORT=$PORT valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
    --dump-instr=no --collect-atstart=yes "$BIN" >/dev/null 2>"$OUT/valgrind.log" &
vg=$!
trap 'kill "$vg" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/bare" && break
    sleep 0.2
done

stacks=(bare perf-miss bare-hit perf-hit tower)
declare -A base=([bare]=bare [perf-miss]=bare [bare-hit]=bare-hit [perf-hit]=bare-hit [tower]=bare)
declare -A ir
# $1 port, $2 path, $3 count: requests on one keep-alive connection.
send() {
    python3 - "$1" "$2" "$3" "$ACCEPT" <<'EOF'
import http.client, sys
port, path, n, accept = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("GET", path, headers={"Accept-Encoding": accept})
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
EOF
}
dump=0
for kind in axum hyper; do
    for i in "${!stacks[@]}"; do
        stack=${stacks[$i]}
        if [ "$kind" = axum ]; then p=$PORT; else p=$((PORT + i + 1)); fi
        send "$p" "/$stack" "$WARMUP"
        callgrind_control -z "$vg" >/dev/null
        send "$p" "/$stack" "$N"
        callgrind_control -d "$kind-$stack" "$vg" >/dev/null
        dump=$((dump + 1))
        f=$(ls -t "$OUT"/callgrind.out.* | head -1)
        mv "$f" "$OUT/$kind-$stack.out"
        total=$(awk '/^summary:/ {print $2}' "$OUT/$kind-$stack.out")
        ir[$kind,$stack]=$((total / N))
        echo "$kind $stack: ${ir[$kind,$stack]} instructions/request" >&2
    done
done

echo
echo "| stack | axum Ir/req | ratio | hyper Ir/req | ratio |"
echo "|---|---:|---:|---:|---:|"
for stack in "${stacks[@]}"; do
    line="| \`$stack\` (vs \`${base[$stack]}\`) |"
    for kind in axum hyper; do
        line+=$(python3 -c "print(f' {${ir[$kind,$stack]}} | {${ir[$kind,${base[$stack]}]} / ${ir[$kind,$stack]}:.2f} |')")
    done
    echo "$line"
done
if [ -n "$ANNOTATE" ]; then
    for kind in axum hyper; do
        echo
        echo "## $kind $ANNOTATE"
        callgrind_annotate --inclusive=no "$OUT/$kind-$ANNOTATE.out" 2>/dev/null | head -60
    done
fi
