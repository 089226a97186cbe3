#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need when it is missing
# (redis-server, for the cache and rate-limit tiers; its `--sentinel` mode and redis-cli, from
# redis-tools, for the Cluster and Sentinel topologies), then checks formatting, lints and docs,
# runs every test with all features, and builds the examples and benches.
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
# The tests start their own redis-server on a free port; none is left running here.

# --- checks ------------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --all-targets --all-features -- -D warnings

step "cargo check without default features"
cargo check --no-default-features --lib

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
