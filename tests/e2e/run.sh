#!/usr/bin/env bash
# End-to-end tests of the Message Center: installs what is missing (Debian's chromium,
# playwright-core from npm), then runs `node --test tests/e2e/`, which builds and starts
# the hub itself. Screenshots land in target/e2e/.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium >/dev/null
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "tests/e2e: node and npm are required" >&2
  exit 1
fi

if [ ! -d node_modules/playwright-core ]; then
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi

# Chromium downloads nothing: playwright-core drives /usr/bin/chromium (never `playwright install`).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
mkdir -p target/e2e
timeout 1200 node --test --test-concurrency=1 tests/e2e/
