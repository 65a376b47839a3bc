#!/usr/bin/env bash
# Inbound POST -> `message.new` latency and ingestion rate, measured in one run on:
#   1. one embedded node;  2. two nodes on PostgreSQL + Redis, websocket on the POSTing node;
#   3. the same two nodes, websocket on the other node.
# The two nodes share a new database on the machine's PostgreSQL (PG_URL, default
# postgres://postgres@127.0.0.1:5432), dropped at the end.
# Servers share core 0, the probe runs on core 1 (taskset). Usage: scripts/measure-latency.sh [MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
cargo build --release --bin switchboard --example ingest_probe
B=./target/release/switchboard
P=./target/release/examples/ingest_probe
RUN=$(mktemp -d -t switchboard-latency.XXXXXX)
REDIS_PORT=16390
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
DB=switchboard_latency_$$
createdb --maintenance-db "$PG_URL/postgres" "$DB"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    dropdb --force --maintenance-db "$PG_URL/postgres" "$DB" || true
}
trap cleanup EXIT

redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --dir "$RUN" --logfile "$RUN/redis.log" &
pids+=($!)
export SWITCHBOARD__LOG__FILTER=warn SWITCHBOARD__SERVER__WORKERS=1
SWITCHBOARD__STORAGE__PATH="$RUN/data" SWITCHBOARD__SERVER__BIND=127.0.0.1:18500 taskset -c 0 $B serve >"$RUN/single.log" 2>&1 &
pids+=($!)
for p in 18501 18502; do
    SWITCHBOARD__SERVER__BIND=127.0.0.1:$p SWITCHBOARD__STORAGE__BACKEND=postgres SWITCHBOARD__BUS__BACKEND=redis \
    SWITCHBOARD__POSTGRES__URL="$PG_URL/$DB" \
    SWITCHBOARD__REDIS__URL=redis://127.0.0.1:$REDIS_PORT SWITCHBOARD__REDIS__KEY_PREFIX=latency \
        taskset -c 0 $B serve >"$RUN/node$p.log" 2>&1 &
    pids+=($!)
done
for p in 18500 18501 18502; do
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$p/readyz" >/dev/null && break; sleep 0.1; done
done

echo "-- one embedded node"
taskset -c 1 $P http://127.0.0.1:18500 "$N" 16 5
echo "-- PostgreSQL + Redis, POST and websocket on node A"
taskset -c 1 $P http://127.0.0.1:18501 "$N" 16 5 http://127.0.0.1:18501
echo "-- PostgreSQL + Redis, POST on node A, websocket on node B"
taskset -c 1 $P http://127.0.0.1:18501 "$N" 16 5 http://127.0.0.1:18502
