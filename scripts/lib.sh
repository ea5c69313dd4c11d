# Shared by scripts/demo.sh and scripts/test.sh: make sure redis-server is
# installed, and start and stop a throwaway one on a free loopback port.

# Installs Debian packages, with `apt-get update` once per script before the
# first install (a fresh image has no package lists).
APT_UPDATED=""
apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    if [ -z "$APT_UPDATED" ]; then
        $sudo apt-get update -qq
        APT_UPDATED=1
    fi
    # sudo resets the environment: pass DEBIAN_FRONTEND through env.
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_redis_server() {
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
        return
    fi
    echo "==> installing redis-server (Debian package)"
    apt_install redis-server
}

# The reference parser of the Prometheus text format, which the tests use to
# check `titus-count serve`.
ensure_prometheus_parser() {
    python3 -c 'import prometheus_client' 2>/dev/null && return
    echo "==> installing the Python prometheus-client (test only)"
    python3 -m pip install -q prometheus-client 2>/dev/null \
        || python3 -m pip install -q --break-system-packages prometheus-client 2>/dev/null \
        || apt_install python3-prometheus-client
}

# The clock tests run processes with a wrong wall clock through libfaketime.
ensure_faketime() {
    [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] && return
    echo "==> installing faketime (Debian package, test only)"
    apt_install faketime
}

# The TLS tests make their certificates with the openssl command.
ensure_openssl() {
    command -v openssl >/dev/null && return
    echo "==> installing openssl (Debian package)"
    apt_install openssl
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
    REDIS_PID=""
    # Set before the server starts, so an interrupted wait cleans up too.
    trap stop_redis EXIT
    local attempt log
    for attempt in $(seq 20); do
        REDIS_PORT=$((20000 + RANDOM % 40000))
        log="$REDIS_DIR/redis-$attempt.log"
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
            --dir "$REDIS_DIR" --logfile "$log" --daemonize no &
        REDIS_PID=$!
        for _ in $(seq 100); do
            # A PONG from another server that holds the port (ours then
            # exits) must never be used: ours must be running and have said
            # in its own log that it listens.
            kill -0 "$REDIS_PID" 2>/dev/null || break
            if grep -q "Ready to accept connections" "$log" 2>/dev/null \
                && [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null || true)" = PONG ] \
                && kill -0 "$REDIS_PID" 2>/dev/null; then
                REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
                return
            fi
            sleep 0.05
        done
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=""
    done
    echo "could not start redis-server; its log:" >&2
    cat "$log" >&2 || true
    rm -rf "$REDIS_DIR"
    exit 1
}

stop_redis() {
    if [ -n "${REDIS_PID:-}" ]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    rm -rf "${REDIS_DIR:-}"
}
