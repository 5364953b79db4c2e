#!/usr/bin/env bash
# The benchmarks beside a baseline build, in one run:
#
#   scripts/bench.sh [REV]      # REV: the git revision to compare with (default: main)
#
# Builds REV once into target/baseline/ (its own worktree and target dir, so
# the build of the working tree is left alone; the first build compiles
# wasmtime, later ones only what changed), then runs the in-memory and Redis
# benchmarks with BASELINE_DIR pointing at REV's `runtime` binary and
# `throughput` benchmark: each benchmark runs the baseline's jobs in the
# same run and prints both, with their ratio. The machine's load changes from
# one minute to the next; only ratios measured in the same run mean much.
#
# BENCH_JOBS=N sets the job count (default 100000 in memory, 50000 per drain
# on Redis with a baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
rev=${1:-main}
scripts/setup.sh
commit=$(git rev-parse --verify "$rev^{commit}")
base=target/baseline
src=$base/src
out=$base/$commit
if [ ! -x "$out/runtime" ] || [ ! -x "$out/throughput" ]; then
    echo "==> building the baseline $rev ($commit) in $src"
    if [ -d "$src" ]; then
        git -C "$src" checkout --quiet --detach "$commit"
    else
        git worktree add --quiet --detach "$src" "$commit"
    fi
    (
        cd "$src"
        export CARGO_TARGET_DIR="$PWD/../target"
        cargo build --release -p runtime --bin runtime
        cargo bench --no-run -p runtime-tests --bench throughput
    )
    mkdir -p "$out"
    cp "$base/target/release/runtime" "$out/runtime"
    # The benchmark executable cargo just built (the newest of its name).
    bench=$(ls -t "$base"/target/release/deps/throughput-* | grep -v '\.d$' | head -n 1)
    cp "$bench" "$out/throughput"
fi
export BASELINE_DIR="$PWD/$out"
echo "==> benchmarks beside $rev ($commit)"
cargo bench -p runtime-tests --bench throughput --bench redis
