#!/usr/bin/env bash
# Starts Prometheus (Debian's `prometheus` package) on loopback against a running demo server,
# with the scrape config and alert rules of this folder, so you can look at real data at once.
#
#   cargo run --release --example demo_server &        # the demo, on 127.0.0.1:3000
#   examples/monitoring/run-prometheus.sh               # Prometheus on 127.0.0.1:9090
#   open http://127.0.0.1:9090/alerts  (or point Grafana at it: see README.md here)
#
# Environment: DEMO_ADDR (127.0.0.1:3000), PROMETHEUS_ADDR (127.0.0.1:9090), DATA_DIR (a
# fresh temporary directory, removed on exit). Stops with Ctrl-C (or SIGTERM), which stops
# Prometheus too: it never outlives this script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
demo="${DEMO_ADDR:-127.0.0.1:3000}"
listen="${PROMETHEUS_ADDR:-127.0.0.1:9090}"

if ! command -v prometheus >/dev/null 2>&1; then
    echo "error: prometheus not found: sudo apt-get install prometheus (Debian/Ubuntu)" >&2
    exit 1
fi
case "$demo" in
127.* | localhost:* | "[::1]":*) ;;
*) echo "error: DEMO_ADDR=$demo: this script scrapes loopback addresses only" >&2; exit 2 ;;
esac
if ! curl -fsS -o /dev/null "http://$demo/metrics" 2>/dev/null; then
    echo "warning: no demo answering on http://$demo/metrics yet (cargo run --release --example demo_server)" >&2
fi

work="$(mktemp -d)"
prom_pid=""
# On exit, Ctrl-C or SIGTERM: stop Prometheus (by its PID) and remove the temporary files.
cleanup() {
    if [ -n "$prom_pid" ]; then
        kill "$prom_pid" 2>/dev/null || true
        wait "$prom_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
data="${DATA_DIR:-$work/data}"
# The shipped config with the demo's address; the rules file next to it.
sed "s|\"127.0.0.1:3000\"|\"$demo\"|" "$here/prometheus/prometheus.yml" >"$work/prometheus.yml"
cp "$here/prometheus/alerts.yml" "$work/alerts.yml"
promtool check config "$work/prometheus.yml" >/dev/null

echo "Prometheus on http://$listen scraping http://$demo/metrics (Ctrl-C stops it)"
prometheus \
    --config.file="$work/prometheus.yml" \
    --storage.tsdb.path="$data" \
    --storage.tsdb.retention.time=1d \
    --web.listen-address="$listen" &
prom_pid=$!
wait "$prom_pid"
