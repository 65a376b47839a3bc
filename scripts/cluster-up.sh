#!/usr/bin/env bash
# A local try-out of cluster mode: Redis (unless REDIS_URL is given), three Switchboard
# nodes sharing one PostgreSQL database, and nginx in front of them, all on loopback. Ctrl-C
# stops everything. The database is DATABASE_URL's (default: `switchboard_cluster` on the
# machine's PostgreSQL, created if missing; it is kept between runs).
#
#   scripts/cluster-up.sh                  # nginx on 127.0.0.1:8080, nodes on 8081-8083
#   PORT=9000 REDIS_URL=redis://127.0.0.1:6379 scripts/cluster-up.sh
#
# Tokens: target/release/switchboard token --sub sam --tenant acme --roles user --locations L1
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8080}
NODES=("$((PORT + 1))" "$((PORT + 2))" "$((PORT + 3))")
RUN=${RUN_DIR:-$(mktemp -d -t switchboard-cluster.XXXXXX)}
mkdir -p "$RUN"/{client_body,proxy,fastcgi,uwsgi,scgi}
PREFIX=${KEY_PREFIX:-switchboard}
BIN=target/release/switchboard

command -v nginx >/dev/null || { echo "nginx is missing: apt-get install nginx-light" >&2; exit 1; }
[[ -x $BIN ]] || cargo build --release --bin switchboard

# Everything runs as a child of this script (nginx too, with `daemon off;`). Stopping: SIGTERM
# nginx and the nodes and wait for them (the nodes drain), then the same for Redis.
pids=()
redis_pid=
cleanup() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n $redis_pid ]]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    echo "stopped; logs are in $RUN"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# Polls (bounded, 10 s) until `$2` succeeds; fails with `$1` otherwise.
await() {
    local what=$1
    shift
    for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "$what did not come up; logs are in $RUN" >&2
    exit 1
}

if [[ -z ${REDIS_URL:-} ]]; then
    command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install redis-server" >&2; exit 1; }
    REDIS_PORT=$((PORT + 10))
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$RUN" \
        --logfile "$RUN/redis.log" &
    redis_pid=$!
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    await "redis-server on $REDIS_PORT" redis-cli -p "$REDIS_PORT" ping
fi

if [[ -z ${DATABASE_URL:-} ]]; then
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/switchboard_cluster
    psql "postgres://postgres@127.0.0.1:5432/postgres" -Atqc \
        "SELECT 1 FROM pg_database WHERE datname = 'switchboard_cluster'" | grep -q 1 ||
        createdb --maintenance-db postgres://postgres@127.0.0.1:5432/postgres switchboard_cluster
fi

for i in 0 1 2; do
    SWITCHBOARD__SERVER__BIND="127.0.0.1:${NODES[$i]}" \
    SWITCHBOARD__STORAGE__BACKEND=postgres \
    SWITCHBOARD__POSTGRES__URL="$DATABASE_URL" \
    SWITCHBOARD__BUS__BACKEND=redis \
    SWITCHBOARD__REDIS__URL="$REDIS_URL" \
    SWITCHBOARD__REDIS__KEY_PREFIX="$PREFIX" \
        "$BIN" serve >"$RUN/node$((i + 1)).log" 2>&1 &
    pids+=($!)
done
for p in "${NODES[@]}"; do
    await "the node on $p" curl -fs "http://127.0.0.1:$p/readyz"
done

sed -e "s|@RUN@|$RUN|g" -e "s|@LISTEN@|127.0.0.1:$PORT|" \
    -e "s|@NODE1@|127.0.0.1:${NODES[0]}|" -e "s|@NODE2@|127.0.0.1:${NODES[1]}|" -e "s|@NODE3@|127.0.0.1:${NODES[2]}|" \
    config/nginx.conf >"$RUN/nginx.conf"
nginx -p "$RUN" -c "$RUN/nginx.conf" -g 'daemon off;' &
pids+=($!)
await "nginx on $PORT" curl -fs "http://127.0.0.1:$PORT/healthz"

echo "Switchboard cluster: http://127.0.0.1:$PORT (nodes ${NODES[*]}, redis $REDIS_URL, database $DATABASE_URL, logs $RUN)"
wait
