#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build Switchboard and run every test,
# and nothing that is already there (a second run changes nothing):
#   - rustfmt and clippy (rustup components of the toolchain in use);
#   - redis-server and redis-cli (the Redis and cluster tests start their own servers),
#     nginx (the cluster test's load balancer), PostgreSQL (its server binaries, and a
#     server answering on 127.0.0.1:5432 for user postgres with trust authentication),
#     Debian's chromium, node and npm (apt-get; sudo when not root);
#   - playwright-core for the browser tests (npm ci, into node_modules/).
# Used by .ci/run, tests/e2e/run.sh and the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if command -v rustup >/dev/null; then
  for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^${component}" || rustup component add "$component"
  done
fi

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The machine's PostgreSQL must answer on 127.0.0.1:5432 for user postgres without a password
# (tests/api_postgres uses it; its fault tests start private servers of their own). Where it
# does not, its clusters are started, and told to trust connections from loopback.
pg_ok() { psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; }
if ! pg_ok; then
  echo "== starting PostgreSQL on 127.0.0.1:5432"
  for version in $(ls /etc/postgresql 2>/dev/null); do
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    if [ -f "$hba" ] && ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
      echo "   $hba: trusting loopback connections (tests only: never on a shared server)"
      $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    fi
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null ||
      $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
  done
  for _ in $(seq 1 50); do pg_ok && break; sleep 0.2; done
fi
pg_ok || { echo "PostgreSQL at 127.0.0.1:5432 does not let user postgres in (trust is expected)" >&2; exit 1; }

# playwright-core drives /usr/bin/chromium; it never downloads a browser.
if [ ! -d node_modules/playwright-core ]; then
  echo "== installing playwright-core"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi
