#!/usr/bin/env bash
# A local try-out of cluster mode: Redis (unless REDIS_URL is given), three Switchboard
# nodes and nginx in front of them, all on loopback. Ctrl-C stops everything.
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
PREFIX=${KEY_PREFIX:-switchboard}
BIN=target/release/switchboard

command -v nginx >/dev/null || { echo "nginx is missing: apt-get install nginx-light" >&2; exit 1; }
[[ -x $BIN ]] || cargo build --release --bin switchboard

pids=()
cleanup() {
    [[ -f $RUN/nginx.pid ]] && kill "$(cat "$RUN/nginx.pid")" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "stopped; logs are in $RUN"
}
trap cleanup EXIT INT TERM

if [[ -z ${REDIS_URL:-} ]]; then
    command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install redis-server" >&2; exit 1; }
    REDIS_PORT=$((PORT + 10))
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$RUN" \
        --logfile "$RUN/redis.log" &
    pids+=($!)
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

for i in 0 1 2; do
    SWITCHBOARD__SERVER__BIND="127.0.0.1:${NODES[$i]}" \
    SWITCHBOARD__STORAGE__BACKEND=redis \
    SWITCHBOARD__BUS__BACKEND=redis \
    SWITCHBOARD__REDIS__URL="$REDIS_URL" \
    SWITCHBOARD__REDIS__KEY_PREFIX="$PREFIX" \
        "$BIN" serve >"$RUN/node$((i + 1)).log" 2>&1 &
    pids+=($!)
done
for p in "${NODES[@]}"; do
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$p/healthz" >/dev/null && break; sleep 0.1; done
done

mkdir -p "$RUN"/{client_body,proxy,fastcgi,uwsgi,scgi}
sed -e "s|@RUN@|$RUN|g" -e "s|@LISTEN@|127.0.0.1:$PORT|" \
    -e "s|@NODE1@|127.0.0.1:${NODES[0]}|" -e "s|@NODE2@|127.0.0.1:${NODES[1]}|" -e "s|@NODE3@|127.0.0.1:${NODES[2]}|" \
    config/nginx.conf >"$RUN/nginx.conf"
nginx -p "$RUN" -c "$RUN/nginx.conf"

echo "Switchboard cluster: http://127.0.0.1:$PORT (nodes ${NODES[*]}, redis $REDIS_URL, logs $RUN)"
wait
