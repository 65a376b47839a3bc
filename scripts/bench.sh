#!/usr/bin/env bash
# The benchmarks in one command: builds Switchboard, the load tool and the peers, runs every
# workload against every system at a scale, and writes BENCHMARKS.md with its plots.
#
#   scripts/bench.sh            # quick scale (a few minutes)
#   scripts/bench.sh full       # full scale (10k-20k sessions, 3 repeats)
#   scripts/bench.sh quick --systems switchboard,socketioxide --workloads W3
#   scripts/bench.sh quick --workloads W4 --systems switchboard,switchboard-redis-cluster,socketioxide,socketio
#
# Servers run on core 0 and the load tool on core 1 (the tool pins both itself).
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-quick}"
shift || true

# W4 starts its own Redis (and a Redis Cluster, with redis-cli) and a private PostgreSQL
# server (initdb, as the postgres OS user when run as root).
command -v redis-server >/dev/null || { echo "redis-server is needed (W4): apt-get install redis-server" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli is needed (W4): apt-get install redis-tools" >&2; exit 1; }
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null ||
  { echo "PostgreSQL's server binaries are needed (W4): apt-get install postgresql" >&2; exit 1; }
command -v node >/dev/null || { echo "node and npm are needed (the Socket.IO peer)" >&2; exit 1; }
bash benches/peers/setup.sh
cargo build --release --locked -p switchboard -p switchboard-load --bins
exec "${CARGO_TARGET_DIR:-target}/release/switchboard-load" suite --scale "$scale" "$@"
