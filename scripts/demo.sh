#!/usr/bin/env bash
# Runs the demo: several Titus processes with counted handlers flush into a
# throwaway redis-server, then the totals are read back and printed.
# Arguments go to the demo, e.g. `scripts/demo.sh --processes 4 --messages 100000`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_redis_server
cargo build --release --example titus
start_redis
echo "==> redis-server on $REDIS_URL"
TITUS_COUNT_REDIS_URL="$REDIS_URL" TITUS_COUNT_NAMESPACE=demo \
    ./target/release/examples/titus "$@"
echo
echo "==> HGETALL titus:{demo}:totals"
redis-cli -p "$REDIS_PORT" --no-raw HGETALL 'titus:{demo}:totals'
