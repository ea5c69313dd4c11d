#!/usr/bin/env bash
# Runs every benchmark (each starts its own redis-server), counts the hot
# path's instructions with callgrind, and writes the results table to
# benches/results.md and the chart to benches/results.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_redis_server
command -v valgrind >/dev/null || { echo "==> installing valgrind (Debian package)"; apt_install valgrind; }

# `--report-only` skips the benchmark runs and writes the report again from
# the last run's logs and criterion data (the callgrind counts are redone).
if [ "${1:-}" != "--report-only" ]; then
    cargo bench --bench per_call --bench pipeline --bench flush | tee target/bench.log
    # The per-call pairs again with every function and loop aligned to 64 bytes:
    # a tiny function's speed depends on whether its hot path, or the calling
    # loop, straddles a 32-byte fetch block, which this takes out of the
    # comparison. (The filter matches no criterion benchmark, so only the paired
    # runs run.)
    TITUS_BENCH_PLACEMENT_ONLY=1 RUSTFLAGS="-C llvm-args=-align-all-functions=6 -C llvm-args=-align-loops=64" CARGO_TARGET_DIR=target/aligned \
        cargo bench --bench per_call -- paired-only | tee target/aligned.log
    cargo bench --bench fleet | tee target/fleet.log
    cargo bench --bench memory | tee target/memory.log
fi

cargo build --release --example hot_path
CALLS=2000000
CALLGRIND="calls $CALLS"
for mode in plain counted count_macro; do
    out="$(mktemp)"
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        target/release/examples/hot_path "$mode" "$CALLS" 2>&1 | grep -q refs
    refs="$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')"
    rm -f "$out"
    CALLGRIND="$CALLGRIND
$mode $refs"
done
export CALLGRIND

{
    cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    family="$(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs)"
    model="$(grep -m1 '^model[[:space:]]*:' /proc/cpuinfo | cut -d: -f2 | xargs)"
    hypervisor="$(lscpu 2>/dev/null | awk -F: '/Hypervisor vendor/ {gsub(/^ +/, "", $2); print " under " $2}')"
    memory="$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "Measured on $(nproc) cores ($cpu, family $family model $model)$hypervisor, $memory, Linux $(uname -r), $(rustc --version | cut -d' ' -f1-2), $(redis-server --version | grep -o 'v=[^ ]*' | sed 's/v=/redis-server /'), $(date -u +%Y-%m-%d)."
    echo
    python3 scripts/bench_report.py
    echo
    grep -E '^(flush_batch/[0-9]+: |flush_threads/[0-9]+: |flusher_cpu: )' target/bench.log | sed 's/^/    /'
    echo
    echo "### Memory (heap held by titus-count, threads parked after counting)"
    echo
    grep -E '^\|' target/memory.log
    echo
    echo "### Fleet simulation"
    echo
    grep -E '^(\||fleet)' target/fleet.log
} > benches/results.md
cat benches/results.md

# The README carries the same tables, between its results markers.
python3 - <<'PY'
results = open("benches/results.md").read().replace("\n### ", "\n#### ")
readme = open("README.md").read()
begin, end = "<!-- results:begin -->\n", "<!-- results:end -->"
head, rest = readme.split(begin, 1)
_, tail = rest.split(end, 1)
open("README.md", "w").write(head + begin + results + end + tail)
PY
