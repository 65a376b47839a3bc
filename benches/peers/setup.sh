#!/usr/bin/env bash
# Installs and builds the benchmark peers (idempotent): npm deps for the Socket.IO (Node)
# peer and a release build of the Rust peers workspace. Then `start.sh NAME PORT` runs one.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ ! -d "$here/socketio/node_modules" ]]; then
  (cd "$here/socketio" && npm ci --no-audit --no-fund)
fi

cargo build --release --locked --manifest-path "$here/Cargo.toml"

bin="${CARGO_TARGET_DIR:-$here/target}/release"
echo "socketio:         node $here/socketio/server.js"
for name in socketioxide bare-actix bare-tungstenite; do
  printf '%-17s %s\n' "$name:" "$bin/peer-$name"
done
