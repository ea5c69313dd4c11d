# Shared by scripts/demo.sh and scripts/test.sh: make sure redis-server is
# installed, and start and stop a throwaway one on a free loopback port.

ensure_redis_server() {
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
        return
    fi
    echo "==> installing redis-server (Debian package)"
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
}

# The reference parser of the Prometheus text format, which the tests use to
# check `titus-count serve`.
ensure_prometheus_parser() {
    python3 -c 'import prometheus_client' 2>/dev/null && return
    echo "==> installing the Python prometheus-client (test only)"
    python3 -m pip install -q prometheus-client 2>/dev/null \
        || python3 -m pip install -q --break-system-packages prometheus-client 2>/dev/null \
        || { local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"; $sudo apt-get install -y -qq python3-prometheus-client >/dev/null; }
}

# The TLS tests make their certificates with the openssl command.
ensure_openssl() {
    command -v openssl >/dev/null && return
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq openssl >/dev/null
}

ensure_rust_components() {
    for component in rustfmt clippy; do
        if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
            rustup component add "$component"
        fi
    done
}

# Starts redis-server on a free loopback port; sets REDIS_PORT and REDIS_URL
# and stops the server when the calling script exits.
start_redis() {
    REDIS_DIR="$(mktemp -d)"
    for _ in $(seq 20); do
        REDIS_PORT=$((20000 + RANDOM % 40000))
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
            --dir "$REDIS_DIR" --logfile "$REDIS_DIR/redis.log" --daemonize no &
        REDIS_PID=$!
        for _ in $(seq 100); do
            if [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
                REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
                trap stop_redis EXIT
                return
            fi
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.05
        done
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    done
    echo "could not start redis-server; its log:" >&2
    cat "$REDIS_DIR/redis.log" >&2
    exit 1
}

stop_redis() {
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    rm -rf "$REDIS_DIR"
}
