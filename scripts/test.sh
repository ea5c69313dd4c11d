#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit, behaviour and doc
# tests (each Redis test starts its own redis-server), then the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_redis_server
ensure_rust_components
ensure_prometheus_parser
ensure_openssl
ensure_faketime
echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy (default features, then all features: TLS)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "==> cargo check of the crates alone (without the dev-dependencies' features)"
cargo check --workspace --lib --bins
echo "==> cargo test (all features)"
cargo test --workspace --all-features
echo "==> loom model of the per-thread cell protocol"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test --release -p titus-count-runtime --lib loom
echo "==> demo"
scripts/demo.sh --processes 3 --messages 50000
