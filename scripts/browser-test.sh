#!/usr/bin/env bash
# Browser test of the dashboard: opens it in headless Chromium, checks that
# it draws data, refreshes and logs no errors, and saves a screenshot.
#
#     scripts/browser-test.sh URL SCREENSHOT_PATH [--expect-ad AD_ID] [--allow-empty] [--width PX] [--hover] [--key KEY [--only-ads A,B]] [--expect-prompt]
#
# e.g. against a running `tally up --demo --addr 127.0.0.1:18090`:
#
#     scripts/browser-test.sh http://127.0.0.1:18090/ /tmp/dashboard.png --expect-ad ad-viral
#
# Installs what is missing: Debian's chromium package (the test drives it
# through playwright-core, which downloads no browser) and the test's npm
# dependencies (`npm ci` into tests/browser/node_modules). Node.js 20 or
# later must be on PATH. Set CHROMIUM to use another Chromium binary.
#
# A stand-in API server for working on the dashboard without tally:
#
#     python3 tests/browser/fixture_server.py --port 18091 [--mode empty]
set -euo pipefail
caller_dir=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

if [ "$#" -lt 2 ]; then
    echo "usage: scripts/browser-test.sh URL SCREENSHOT_PATH [--expect-ad AD_ID] [--allow-empty] [--width PX] [--hover] [--key KEY [--only-ads A,B]] [--expect-prompt]" >&2
    exit 2
fi

started=$SECONDS
current_step="setup"

on_exit() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        echo "browser-test.sh: FAILED during: $current_step (exit $status, $((SECONDS - started)) s)" >&2
    fi
}
trap on_exit EXIT

step() {
    current_step="$*"
    echo "==> $current_step ($((SECONDS - started)) s)"
}

ensure_node() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "node and npm not found: installing Debian's nodejs and npm packages" >&2
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
    fi
    local major
    major=$(node -p 'process.versions.node.split(".")[0]')
    if [ "$major" -lt 20 ]; then
        echo "node $(node --version) is too old: playwright-core needs Node.js 20 or later" >&2
        exit 1
    fi
}

ensure_chromium() {
    local chromium="${CHROMIUM:-/usr/bin/chromium}"
    if [ ! -x "$chromium" ]; then
        if [ -n "${CHROMIUM:-}" ]; then
            echo "CHROMIUM=$CHROMIUM is not an executable" >&2
            exit 1
        fi
        echo "chromium not found: installing Debian's chromium package" >&2
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-liberation
    fi
    "$chromium" --version 2>/dev/null || true
}

# npm ci when node_modules is missing or older than the lock file.
ensure_node_modules() {
    local dir=tests/browser
    local marker=$dir/node_modules/.package-lock.json
    if [ ! -f "$marker" ] || [ "$dir/package-lock.json" -nt "$marker" ]; then
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

step "node"
ensure_node
echo "node $(node --version), npm $(npm --version)"

step "chromium"
ensure_chromium

step "npm dependencies (tests/browser)"
ensure_node_modules

step "dashboard test"
# From the caller's directory, so that a relative SCREENSHOT_PATH means what
# the caller meant.
(cd "$caller_dir" && node "$root/tests/browser/dashboard.test.mjs" "$@")

current_step="summary"
echo "browser-test.sh: OK ($((SECONDS - started)) s)"
