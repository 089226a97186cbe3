#!/usr/bin/env bash
# Instructions per iteration of criterion benchmarks, counted by valgrind's callgrind:
# repeatable on a busy machine, where the benchmarks' nanoseconds move by ±30%. Each benchmark
# runs under callgrind in criterion's profile mode for SECS seconds; only the bench's
# per-iteration function (FN, a glob) is counted, and its instructions are divided by its
# calls. Prints one line per benchmark and, when the first one is a bare baseline, what each
# other one adds to it.
#
#   scripts/callgrind-bench.sh                       # the slow tracker: bench `slow`, FN slow::one
#   BENCH=slow FN='slow::one*' scripts/callgrind-bench.sh 'slow_no_recorder/per_request/bare$' ...
#   BIN=/tmp/slow.old scripts/callgrind-bench.sh   # an older build's bench binary
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH=${BENCH:-slow}
FN=${FN:-slow::one*}
SECS=${SECS:-2}
command -v valgrind >/dev/null || { echo "error: valgrind missing (apt-get install -y valgrind)" >&2; exit 1; }
if [ $# -eq 0 ]; then
    set -- 'slow_no_recorder/per_request/bare$' \
        'slow_no_recorder/per_request/SlowRequestLayer$' \
        'slow_no_recorder/per_request/tower_http_TraceLayer$' \
        'slow_axum_no_recorder/axum_request/bare$' \
        'slow_axum_no_recorder/axum_request/SlowRequestLayer$' \
        'slow_axum_no_recorder/axum_request/tower_http_TraceLayer$'
fi
bin=${BIN:-}   # another build of the bench binary (an older commit's), instead of building this one
[ -n "$bin" ] || bin=$(cargo bench --bench "$BENCH" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["bench"] and m.get("executable"):
        print(m["executable"])' | tail -1)
out=$(mktemp)
count=$(mktemp)
trap 'rm -f "$out" "$count"' EXIT
# Calls of the counted function: the sum over its callers in the caller tree (inlined code
# shows the function under several files; the entry with callers is the one).
cat >"$count" <<'PY'
import re, sys
fn, dump, name = sys.argv[1].rstrip("*"), sys.argv[2], sys.argv[3]
lines = sys.stdin.read().split("\n")
total = int(open(dump).read().split("summary:")[1].split()[0])
calls = 0
for i, line in enumerate(lines):
    if "*" in line and re.search(":" + re.escape(fn) + r"(\s|$)", line):
        found, j = 0, i - 1
        while j >= 0 and "<" in lines[j][:40]:
            m = re.search(r"\(([\d,]+)x\)", lines[j])
            found += int(m.group(1).replace(",", "")) if m else 0
            j -= 1
        calls = max(calls, found)
if calls == 0:
    sys.exit(f"{name}: no call of {fn} found")
print(f"{name}\t{total // calls} instructions/iteration ({calls} iterations)")
PY
for filter in "$@"; do
    valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect="$FN" \
        "$bin" --bench --profile-time "$SECS" "$filter" >/dev/null 2>&1
    callgrind_annotate --inclusive=yes --tree=caller "$out" 2>/dev/null |
        python3 "$count" "$FN" "$out" "$filter"
done
