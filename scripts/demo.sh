#!/usr/bin/env bash
# The quick start: builds the runtime and the example handlers, then runs a
# real job and a misbehaving one on the embedded in-memory queue.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "==> building the example handlers (wasm32-wasip2)"
cargo build --quiet --release --target wasm32-wasip2 --manifest-path jobs/Cargo.toml
echo "==> building the runtime"
cargo build --quiet --release -p runtime
runtime="$PWD/target/release/runtime"
cd jobs  # picks up jobs/runtime.toml
set -x
"$runtime" dispatch hello '{"name": "Ada"}'
set +x
echo
echo "==> a handler that never returns fails only its own job (each attempt is cut off at 1 s):"
set -x
"$runtime" dispatch runaway '{"mode": "loop"}' --max-attempts 2 || echo "(exit status $?: the job failed, as it should)"
"$runtime" dispatch runaway '{"mode": "hoard"}' --max-attempts 1 || echo "(exit status $?: the job failed, as it should)"
