#!/usr/bin/env bash
# The whole suite, as CI runs it: formatting, a warning-free clippy, and
# every test (unit, queue conformance, sandbox with hostile guests, and the
# real binary end to end). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
# wasmtime captures host backtraces on every trap when this is set: slow.
unset RUST_BACKTRACE
# A clean clone gains nothing from incremental caches: they only double the
# disk a release build of every test binary takes.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
scripts/setup.sh
# The Python and JavaScript handlers tests/tests/foreign.rs runs: here, not
# in setup.sh, which the quick start shares and which should not fetch
# their toolchains. Rebuilds only what changed.
scripts/foreign.sh
# Chromium and chromedriver for the dashboard's tests in a real browser.
scripts/browser.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo build (release: tests drive the real binary and an optimised Cranelift)"
cargo build --release --workspace --all-targets
echo "==> cargo clippy -D warnings"
cargo clippy --release --workspace --all-targets -- -D warnings
(cd jobs && cargo clippy --release --target wasm32-wasip2 -- -D warnings)
(cd tests/guests && cargo clippy --release --target wasm32-wasip2 -- -D warnings)
echo "==> cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --workspace 2>&1 | tee "$log"
# One closing line with the totals of every test binary and doc-test run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
