#!/usr/bin/env bash
# Schemathesis against the hub's own OpenAPI description (GET /api/v1/openapi.json): it
# generates requests for every operation, valid and invalid, and checks that none answers
# 5xx and that every answer has the content type the description gives for its status
# (every error application/problem+json). Run by CI after the Rust tests:
# `tests/schemathesis/run.sh [SECONDS]` (default 60 in all, split between the roles).
#
# It installs schemathesis into a virtualenv under the target directory (PyPI), builds the
# hub, starts it on a free loopback port on a fresh embedded data directory, and runs once
# with a service token and once with an admin token (each role reaches different
# operations; a call the role may not make must still answer a documented 4xx).
set -euo pipefail
export NO_COLOR=1
cd "$(dirname "$0")/../.."
seconds="${1:-60}"
target="${CARGO_TARGET_DIR:-target}"
venv="$target/schemathesis-venv"
version="4.32.5"

if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$version"
fi
bash scripts/build-debug.sh -q
bin="$target/debug/switchboard"

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cleanup() {
  [[ -n "${hub:-}" ]] && kill "$hub" 2>/dev/null && wait "$hub" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# The development secret on loopback, embedded storage in the temp folder; rate limits
# raised so the run tests the operations rather than the limiter.
SWITCHBOARD__SERVER__BIND="127.0.0.1:$port" \
SWITCHBOARD__STORAGE__PATH="$work/data" \
SWITCHBOARD__LIMITS__USER_PER_SECOND=100000 \
SWITCHBOARD__LIMITS__USER_BURST=100000 \
SWITCHBOARD__LOG__LEVEL=warn \
  "$bin" serve >"$work/hub.log" 2>&1 &
hub=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || { echo "the hub did not start:"; cat "$work/hub.log"; exit 1; }

service="$("$bin" token --sub ingest --tenant acme --roles service)"
admin="$("$bin" token --sub ada --tenant acme --roles admin --locations L1,L2)"

status=0
for role in service admin; do
  token="${!role}"
  echo "== schemathesis as $role for $((seconds / 2))s"
  "$venv/bin/st" run "$base/api/v1/openapi.json" \
    --checks not_a_server_error,content_type_conformance \
    --header "Authorization: Bearer $token" \
    --max-time "$((seconds / 2))" --workers 1 \
    --suppress-health-check all \
    || status=1
done
if ((status)); then
  echo "schemathesis found failures (above); the hub's log:"
  tail -50 "$work/hub.log"
fi
exit "$status"
