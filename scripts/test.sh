#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need when it is missing
# (redis-server, for the cache and rate-limit tiers, with its `--sentinel` mode and redis-cli
# from redis-tools for the Cluster and Sentinel topologies; chromium, for the console's page;
# prometheus, for the monitoring kit), then checks formatting, lints and docs, checks the
# monitoring kit with promtool, runs every test with all features, and builds the examples and
# benches.
#
# Usage: scripts/test.sh          (from anywhere; it works from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- what the tests need -------------------------------------------------------------------
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# `redis-cli --cluster create` makes the tests' Redis Cluster (redis-server depends on it).
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
# The console's browser test (tests/console.rs) drives headless Chromium; without it the test
# fails (TOWER_PERF_SKIP_BROWSER=1 skips it).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# Debian's package brings prometheus and promtool (examples/monitoring/, tests/monitoring.rs).
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || need_apt+=(prometheus)
if ((${#need_apt[@]})); then
    step "installing ${need_apt[*]}"
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
    else
        echo "error: ${need_apt[*]} missing and apt-get unavailable; install it and re-run" >&2
        exit 1
    fi
fi
# The tests start their own redis-server and prometheus on free ports; none is left running
# here (Debian's package may start a prometheus service where systemd runs; the tests never use it).

# --- checks ------------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --all-targets --all-features -- -D warnings

step "cargo check without default features"
cargo check --no-default-features --lib

step "promtool: the monitoring kit's config, alert rules and their unit tests"
promtool check config examples/monitoring/prometheus/prometheus.yml
promtool check rules examples/monitoring/prometheus/alerts.yml
promtool test rules examples/monitoring/prometheus/alerts_test.yml

step "cargo test --all-features"
cargo test --all-features

step "unit and compression tests on the pure-Rust codecs (without compression-native)"
cargo test --no-default-features \
    --features axum,tower-http,compression-zstd,compression-br,compression-gzip,compression-deflate \
    --lib --test compression

step "cargo doc (broken links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features

step "build examples and benches"
cargo build --all-features --examples --benches

step "all checks passed"
