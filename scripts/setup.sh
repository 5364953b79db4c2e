#!/usr/bin/env bash
# Installs what building and testing need, when absent: the wasm32-wasip2
# Rust target (for handlers and test fixtures) and redis-server.
set -euo pipefail
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "==> rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2
fi
# A real redis-server (and redis-cli, redis-benchmark) for the Redis backend's
# tests and benchmarks, which start their own servers on private ports.
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "==> apt-get install redis-server"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi
