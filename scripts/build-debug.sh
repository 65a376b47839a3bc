#!/usr/bin/env bash
# Builds the debug binaries that the browser tests, schemathesis and the load tool's smoke
# run start (target/debug/switchboard and switchboard-load), with the features that
# `cargo test --workspace` resolves: the whole workspace, and the dev-dependencies' features,
# which `--examples` brings in. After the tests this reuses their build. A plain `cargo build
# --bin switchboard` resolves fewer features (tokio without `test-util`, for one), so it
# compiles tokio, actix and what depends on them a second time: over a minute on 2 cores.
# Extra arguments go to cargo (`-q`).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo build --locked --workspace --bins --examples "$@"
