#!/usr/bin/env bash
# Builds the test handlers written in Python and JavaScript (tests/foreign/)
# into components, for tests/tests/foreign.rs and the `foreign` bench:
#
#   tests/foreign/target/wasm/python_job.wasm        componentize-py
#   tests/foreign/target/wasm/quickjs_job.wasm       componentize-qjs
#   tests/foreign/target/wasm/spidermonkey_job.wasm  componentize-js
#
# The toolchains are pinned (tests/foreign/python/requirements.txt,
# tests/foreign/js/package-lock.json) and installed into git-ignored
# directories of the project: a venv in tests/foreign/target/venv and
# tests/foreign/js/node_modules. Nothing is installed system-wide; the only
# network used is PyPI and npm, and only when a pin changed.
#
# A component is rebuilt only when the hash of its inputs (its sources, the
# WIT world, its toolchain's pin and its build command below) differs from
# the one stamped beside it, so a second run costs a few hashes.
set -euo pipefail
cd "$(dirname "$0")/.."

foreign=tests/foreign
out=$foreign/target
wasm=$out/wasm
wit=guest-sdk/wit
mkdir -p "$wasm"

for tool in python3 node npm sha256sum; do
    if ! command -v "$tool" >/dev/null; then
        echo "scripts/foreign.sh: $tool is not installed; the Python and JavaScript test handlers need python3 (3.9 or later, with venv), node (18 or later) and npm" >&2
        exit 2
    fi
done

# The hash of the given files' names and contents.
hash_of() {
    sha256sum "$@" | sha256sum | cut -d' ' -f1
}

wit_files=$(find "$wit" -name '*.wit' | sort)

# componentize-py into a venv, reinstalled when its pin changes.
venv=$out/venv
pin=$(hash_of "$foreign/python/requirements.txt")
if [ "$(cat "$venv/.pin" 2>/dev/null)" != "$pin" ]; then
    echo "==> componentize-py into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --no-input --disable-pip-version-check \
        -r "$foreign/python/requirements.txt"
    echo "$pin" >"$venv/.pin"
fi

# componentize-js and componentize-qjs exactly as locked, reinstalled when
# the lock changes. Not `npm ci`: it refuses this lock as out of sync,
# because some optional packages for other platforms (native bindings of
# componentize-qjs, jco and rolldown) are missing from the registry at their
# locked versions, so `npm install` leaves them out of the lock. Instead, a
# fresh `npm install --no-save` from the lock, then a check that every
# installed package is the locked one (version and integrity).
modules=$foreign/js/node_modules
lock=$(hash_of "$foreign/js/package.json" "$foreign/js/package-lock.json")
if [ "$(cat "$modules/.pin" 2>/dev/null)" != "$lock" ]; then
    echo "==> npm install from the lock in $foreign/js"
    rm -rf "$modules"
    (cd "$foreign/js" && npm install --no-save --no-audit --no-fund --loglevel=error)
    (cd "$foreign/js" && node -e '
        const fs = require("fs");
        const locked = JSON.parse(fs.readFileSync("package-lock.json")).packages;
        const installed = JSON.parse(fs.readFileSync("node_modules/.package-lock.json")).packages;
        const unlocked = Object.entries(installed)
            .filter(([path, p]) => locked[path]?.version !== p.version || locked[path]?.integrity !== p.integrity)
            .map(([path, p]) => `${path}@${p.version}`);
        if (unlocked.length > 0) {
            console.error(`scripts/foreign.sh: installed but not as locked:\n  ${unlocked.join("\n  ")}`);
            console.error("package.json and package-lock.json disagree: run npm install in tests/foreign/js and commit the lock");
            process.exit(1);
        }')
    echo "$lock" >"$modules/.pin"
fi

# build NAME INPUTS... -- COMMAND: unless the stamp of NAME matches the hash
# of INPUTS and of COMMAND's definition, runs COMMAND OUTPUT, then moves
# OUTPUT into place, so a failed or interrupted build never leaves a
# half-written module.
build() {
    local name=$1
    shift
    local inputs=()
    while [ "$1" != "--" ]; do
        inputs+=("$1")
        shift
    done
    shift
    local target=$wasm/${name}_job.wasm
    local stamp
    stamp=$({ sha256sum "${inputs[@]}" && declare -f "$1"; } | sha256sum | cut -d' ' -f1)
    if [ -f "$target" ] && [ "$(cat "$target.stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    echo "==> building $target"
    local started=$SECONDS
    local tmp=$out/tmp/${name}_job.wasm
    mkdir -p "$out/tmp"
    rm -f "$tmp" "$target.stamp"
    if ! "$@" "$tmp" >"$out/tmp/$name.log" 2>&1; then
        cat "$out/tmp/$name.log" >&2
        echo "scripts/foreign.sh: building $target failed (output above)" >&2
        return 1
    fi
    mv "$tmp" "$target"
    echo "$stamp" >"$target.stamp"
    echo "    $target: $(($(stat -c %s "$target") / 1024)) KiB in $((SECONDS - started)) s"
}

# componentize-py leaves a __pycache__ beside the sources it reads: it reads
# a copy.
build_python() {
    local src=$out/tmp/python-src
    rm -rf "$src" && mkdir -p "$src" && cp "$foreign"/python/*.py "$src/" &&
        "$venv/bin/componentize-py" -d "$wit" -w handler componentize -p "$src" app -o "$1"
}

build_quickjs() {
    "$modules/.bin/componentize-qjs" --wit "$wit" --js "$foreign/js/quickjs.js" \
        -n handler --sync -o "$1"
}

# `-d http fetch-event`: without it the component imports wasi:http, which
# the handler world does not grant.
build_spidermonkey() {
    "$modules/.bin/componentize-js" --wit "$wit" --world-name handler \
        -d http fetch-event -o "$1" "$foreign/js/spidermonkey.js"
}

# shellcheck disable=SC2086 # $wit_files is one path per line, without spaces
build python "$foreign"/python/*.py "$foreign/python/requirements.txt" $wit_files \
    -- build_python
# shellcheck disable=SC2086
build quickjs "$foreign/js/quickjs.js" "$foreign/js/outcomes.js" "$foreign/js/package-lock.json" \
    $wit_files -- build_quickjs
# shellcheck disable=SC2086
build spidermonkey "$foreign/js/spidermonkey.js" "$foreign/js/outcomes.js" \
    "$foreign/js/package-lock.json" $wit_files -- build_spidermonkey
