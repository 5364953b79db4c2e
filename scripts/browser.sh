#!/usr/bin/env bash
# Installs what the dashboard's browser tests (tests/tests/dashboard.rs)
# drive, when absent: Debian's headless-capable Chromium and its WebDriver
# server, chromedriver.
set -euo pipefail
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "==> apt-get install chromium chromium-driver"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
