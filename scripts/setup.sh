#!/usr/bin/env bash
# Installs what building and testing need, when absent: the wasm32-wasip2
# Rust target (for handlers and test fixtures).
set -euo pipefail
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "==> rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2
fi
