#!/usr/bin/env bash
# Runs the whole test suite: release build, unit and integration tests
# (with a redis-server it installs if missing, and Apache Kafka brokers and
# a Cassandra node the tests start from Maven Central jars), the HTTP API
# against its OpenAPI document (schemathesis, from PyPI into a git-ignored
# venv), the dashboard in headless Chromium (installed if missing), a short
# run of the fuzzers, and a smoke run of the benchmarks, tally against
# Apache Flink included (Flink comes from Maven Central, matplotlib from
# PyPI, into git-ignored caches). One
# command on a fresh machine:
#
#     scripts/test.sh
#
# Everything shares one release build in ./target. Extra arguments are
# passed to `cargo test` (e.g. `scripts/test.sh model` runs only tests whose
# name contains "model").
#
#     scripts/test.sh --long
#
# also runs the long tests, marked #[ignore] (the test binaries in
# LONG_TESTS, e.g. a three-node Cassandra cluster with a node killed), after
# the integration tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Test binaries (tests/NAME.rs) whose #[ignore] tests only --long runs.
readonly LONG_TESTS=(cassandra_cluster)
long=0
if [ "${1:-}" = "--long" ]; then
    long=1
    shift
fi

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

# The Kafka tests (tests/kafka.rs) each start a broker of their own with
# scripts/kafka.sh, which runs Apache Kafka 4.4 from Maven Central jars on
# the JDK. Fetch the jars once, before the tests run in parallel; a JDK 17+
# and Maven come from Debian if missing.
ensure_kafka() {
    if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
        echo "java or mvn not found: installing Debian's openjdk-17-jdk-headless and maven" >&2
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y openjdk-17-jdk-headless maven
    fi
    java -version 2>&1 | head -1
    rm -rf target/test-kafka
    scripts/kafka.sh fetch
}

# The Cassandra tests (tests/cassandra.rs) start one node for the test
# binary with scripts/cassandra.sh (Cassandra 5.0 from Maven Central jars,
# on the same JDK). Fetch the jars once, before the tests.
ensure_cassandra() {
    rm -rf target/test-cassandra target/test-cassandra-cluster
    scripts/cassandra.sh fetch
}

# The Prometheus test (tests/metrics.rs) starts Debian's prometheus with
# scripts/prometheus.sh; `check` installs the package if missing and checks
# the alert rules and the example configuration with promtool.
ensure_prometheus() {
    scripts/prometheus.sh check
    prometheus --version 2>&1 | head -1
}

# Starts `tally up --demo` on a scratch data directory (clicks unsigned,
# reads with the API keys it prints) and runs the browser test against its
# dashboard three times: with the operator key, with the advertiser key
# (only that advertiser's ads, by the demo catalog), and with no key (the
# key prompt, no data). The screenshots stay in target/test-output/.
dashboard_test() {
    local dir port pid status=0 operator advertiser adv ads
    dir=$(mktemp -d)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    target/release/tally --data-dir "$dir/data" up --config jobs/ingest.local.toml --demo --addr "127.0.0.1:$port" >"$dir/up.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        sleep 0.1
    done
    operator=$(awk '/^demo operator key:/ {print $4}' "$dir/up.log")
    advertiser=$(awk '/^demo advertiser key:/ {print $4}' "$dir/up.log")
    adv=$(sed -n 's/^demo advertiser key: .*(advertiser:\(.*\))$/\1/p' "$dir/up.log")
    ads=$(awk -F, -v adv="$adv" '$3 == adv {print $1}' "$dir/data/demo-catalog.csv" | paste -sd, -)
    mkdir -p target/test-output
    if [ -z "$operator" ] || [ -z "$advertiser" ] || [ -z "$ads" ]; then
        echo "tally up --demo printed no keys, or its catalog has no ad of advertiser '$adv'" >&2
        status=1
    fi
    [ "$status" -ne 0 ] || scripts/browser-test.sh "http://127.0.0.1:$port/" target/test-output/dashboard.png \
        --key "$operator" --expect-ad ad-viral || status=$?
    [ "$status" -ne 0 ] || scripts/browser-test.sh "http://127.0.0.1:$port/" target/test-output/dashboard-advertiser.png \
        --key "$advertiser" --only-ads "$ads" --expect-ad ad-viral || status=$?
    [ "$status" -ne 0 ] || scripts/browser-test.sh "http://127.0.0.1:$port/" target/test-output/dashboard-no-key.png \
        --expect-prompt || status=$?
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || true
    if [ "$status" -ne 0 ]; then
        echo "tally up said:" >&2
        cat "$dir/up.log" >&2
    fi
    rm -rf "$dir"
    return "$status"
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

step "services for the tests (redis-server, prometheus; Apache Kafka and Cassandra jars from Maven Central)"
ensure_redis
ensure_prometheus
ensure_kafka
ensure_cassandra

step "build (release binaries)"
cargo build --locked --release --bins

step "tests (unit and integration, release profile)"
cargo test --locked --release "$@"

if [ "$long" = 1 ]; then
    for name in "${LONG_TESTS[@]}"; do
        step "long tests: tests/$name.rs (#[ignore]d)"
        cargo test --locked --release --test "$name" -- --ignored
    done
fi

step "HTTP API against its OpenAPI document (scripts/schemathesis.sh: schemathesis and openapi-spec-validator from PyPI)"
scripts/schemathesis.sh

step "dashboard in headless Chromium (screenshot: target/test-output/dashboard.png)"
dashboard_test

step "fuzz smoke (10 s per target)"
scripts/fuzz.sh 10

step "benchmark smoke (figures only, no thresholds)"
cargo bench --locked --bench core -- --smoke
cargo bench --locked --bench embedded -- --smoke
cargo bench --locked --bench ingest -- --smoke

step "tally vs its peers smoke (bench/run.sh --smoke: the Flink DataStream and SQL jobs from Maven Central, DuckDB and chDB from PyPI, matplotlib; every peer's rows checked; plot in target/bench-smoke/)"
bench/run.sh --smoke

step "tally vs Flink over Kafka smoke (bench/run-kafka.sh --smoke: a broker of its own, 200k clicks)"
bench/run-kafka.sh --smoke

step "Cassandra store vs embedded store smoke (bench/run-cassandra.sh --smoke: a node of its own, 20k clicks, verified; query API latency under load)"
bench/run-cassandra.sh --smoke

current_step="summary"
echo
echo "test.sh: OK: release build, all tests$([ "$long" = 1 ] && echo ", long ones included,") passed, benchmark smokes ran ($((SECONDS - started)) s)"
