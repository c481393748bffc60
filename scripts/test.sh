#!/usr/bin/env bash
# Runs the whole test suite: release build, unit and integration tests
# (with a redis-server it installs if missing), a short run of the fuzzers,
# and a smoke run of the benchmarks. One command on a fresh machine:
#
#     scripts/test.sh
#
# Everything shares one release build in ./target. Extra arguments are
# passed to `cargo test` (e.g. `scripts/test.sh model` runs only tests whose
# name contains "model").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
current_step="setup"

on_exit() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        echo "test.sh: FAILED during: $current_step (exit $status, $((SECONDS - started)) s)" >&2
    fi
}
trap on_exit EXIT

step() {
    current_step="$*"
    echo
    echo "==> $current_step"
}

# Cargo from rustup lives in ~/.cargo/bin, which non-login shells may not
# have on PATH. If there is no cargo at all, fall back to Debian's package;
# it may be older than the `rust-version` in Cargo.toml, in which case cargo
# says so and the build stops.
ensure_cargo() {
    if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null; then
        echo "cargo not found: installing Debian's cargo package (apt-get install -y cargo)" >&2
        apt-get update
        apt-get install -y cargo
    fi
}

# The Redis tests start their own redis-server on a free loopback port; only
# the binary is needed. Debian's package provides it.
ensure_redis() {
    if ! command -v redis-server >/dev/null; then
        echo "redis-server not found: installing Debian's redis-server package" >&2
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
    fi
    redis-server --version
}

print_versions() {
    cargo --version
    rustc --version
    if [ -r /etc/os-release ]; then
        (. /etc/os-release && echo "os: ${PRETTY_NAME:-unknown}")
    fi
    echo "cpus: $(nproc 2>/dev/null || echo unknown)"
}

step "toolchain"
ensure_cargo
print_versions

step "services for the tests (redis-server)"
ensure_redis

step "build (release binaries)"
cargo build --locked --release --bins

step "tests (unit and integration, release profile)"
cargo test --locked --release "$@"

step "fuzz smoke (10 s per target)"
scripts/fuzz.sh 10

benches="skipped (no bench/core.rs)"
if [ -f bench/core.rs ]; then
    step "benchmark smoke (figures only, no thresholds)"
    cargo bench --locked --bench core -- --smoke
    cargo bench --locked --bench embedded -- --smoke
    cargo bench --locked --bench ingest -- --smoke
    benches="smoke ran"
fi

current_step="summary"
echo
echo "test.sh: OK: release build, all tests passed, benchmarks $benches ($((SECONDS - started)) s)"
