#!/usr/bin/env bash
# End-to-end tests of the Message Center: installs what is missing (scripts/install-deps.sh:
# Debian's chromium, playwright-core from npm, ...), then runs `node --test tests/e2e/`, which
# builds and starts the hub itself. Screenshots land in target/e2e/.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Debian's chromium, node and playwright-core where missing (and what the other tests need).
bash scripts/install-deps.sh

# Chromium downloads nothing: playwright-core drives /usr/bin/chromium (never `playwright install`).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
mkdir -p target/e2e
timeout 1200 node --test --test-concurrency=1 tests/e2e/
