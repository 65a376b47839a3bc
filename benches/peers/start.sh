#!/usr/bin/env bash
# Runs one benchmark peer in the foreground: start.sh NAME PORT
#   NAME: socketio | socketioxide | bare-actix | bare-tungstenite
# The server replaces this shell (exec), so the caller's PID is the server's PID.
# REDIS_URL (socketio, socketioxide) is passed through the environment. Run setup.sh first.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="${1:?usage: start.sh NAME PORT}"
port="${2:-${PORT:-}}"
[[ -n "$port" ]] || { echo "usage: start.sh NAME PORT" >&2; exit 2; }
bin="${CARGO_TARGET_DIR:-$here/target}/release"

case "$name" in
  socketio)
    cd "$here/socketio"
    exec node --max-old-space-size=8192 server.js "$port"
    ;;
  socketioxide | bare-actix | bare-tungstenite)
    exe="$bin/peer-$name"
    [[ -x "$exe" ]] || { echo "$exe missing: run $here/setup.sh" >&2; exit 1; }
    exec "$exe" "$port"
    ;;
  *)
    echo "unknown peer '$name' (socketio, socketioxide, bare-actix, bare-tungstenite)" >&2
    exit 2
    ;;
esac
