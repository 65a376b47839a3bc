#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation (the flags `cargo fuzz`
# passes, without a sanitizer, so the stable toolchain builds them) and runs each for a
# bounded time: `fuzz/run.sh [SECONDS]` (default 20). A crash fails the run and leaves its
# input in fuzz/artifacts/<target>/; turn it into a regression test where the bug was.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
host="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target: the flags apply to the targets and their dependencies, not to build scripts.
cargo build --locked --target "$host" --bins
for target in client_frame frame_reader inputs token; do
  echo "== fuzzing $target for ${seconds}s"
  rm -rf "artifacts/$target"
  mkdir -p "corpus/$target" "artifacts/$target"
  "target/$host/debug/$target" "corpus/$target" -max_total_time="$seconds" -max_len=4096 \
    -artifact_prefix="artifacts/$target/" -print_final_stats=1 2>&1 | grep -E '^(Done|stat::number_of_executed_units)|panicked|SUMMARY' || true
  if ls "artifacts/$target"/crash-* >/dev/null 2>&1; then
    echo "fuzz target $target crashed: see fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
