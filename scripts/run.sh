#!/usr/bin/env bash
# Runs tally on embedded defaults: builds the release binary, then starts
# `tally up --demo` on ./tally-data — ingest, the job, the query API and the
# live dashboard in one process, with a generator posting ~2,000 clicks/s —
# and prints the URLs. Stop it with Ctrl-C; a restart resumes where it was.
#
#     scripts/run.sh                          # http://127.0.0.1:8080/
#     TALLY_ADDR=127.0.0.1:9000 scripts/run.sh
#     scripts/run.sh -w 2                     # extra arguments go to `tally up`
#
# Clicks are taken unsigned (jobs/ingest.local.toml): this is for one's own
# machine. The dashboard asks for an API key: paste one of the two keys
# `--demo` prints (an operator's, and one advertiser's).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "run.sh: cargo not found; scripts/test.sh shows how to get it" >&2; exit 1; }

echo "==> build"
cargo build --release --bin tally
echo "==> tally up --demo on ./tally-data (Ctrl-C stops it)"
exec target/release/tally --data-dir tally-data up --demo --config jobs/ingest.local.toml --addr "${TALLY_ADDR:-127.0.0.1:8080}" "$@"
