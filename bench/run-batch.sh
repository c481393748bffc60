#!/usr/bin/env bash
# tally against the batch engines a data engineer would reach for with a
# day of clicks in NDJSON: DuckDB and chDB (ClickHouse in process), both
# from PyPI, computing the same table from the same clicks and catalog
# files with 2 threads, reading and writing included (bench/batch/peers.py
# has the queries and what an expert might still change). tally runs the
# same files twice: `tally run FILE` (the file source, rows to a file) and
# `tally run --bounded` over the embedded log the file was imported into
# (rows committed to the embedded store; the import is not timed). Runs are
# interleaved (round 1 of every engine, then round 2, ...), each a fresh
# process measured by GNU time: wall time, CPU-seconds, peak RSS. The
# clicks of every peer are checked equal to tally's, window by window. It
# ends with one line per peer:
#
#     ratio batch tally/duckdb: X
#     ratio batch tally/chdb: X
#
# (tally's `run FILE` events/s over the peer's, medians).
#
# Usage: bench/run-batch.sh [--smoke] [--clicks N] [--runs R] [--out DIR]
#   --smoke   200k clicks, one round (seconds; no thresholds)
#   --clicks  clicks in the file (default 5,000,000)
#   --runs    rounds (default 3)
#   --out     where the files and the table go (default target/bench-batch)
#
# Environment: TALLY names the tally binary to measure; without it the
# script builds target/release/tally first. bench/compare.rs passes its own,
# so that a cargo build started from inside `cargo bench` (whose CARGO_PKG_*
# variables make build scripts run again) never happens.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

clicks=5000000
runs=3
out=target/bench-batch
threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) clicks=200000; runs=1; shift ;;
    --clicks) clicks=${2:?--clicks needs a number}; shift 2 ;;
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-batch.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$clicks$runs" in *[!0-9]*) echo "run-batch.sh: --clicks and --runs take whole numbers" >&2; exit 2 ;; esac

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
for tool in cargo python3; do
  command -v "$tool" >/dev/null || { echo "run-batch.sh: $tool not found" >&2; exit 1; }
done
if [ ! -x /usr/bin/time ]; then
  echo "run-batch.sh: GNU time not found: installing Debian's time" >&2
  apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y time >/dev/null
fi

# The peers, pinned, in a git-ignored virtual environment.
venv=bench/.cache/venv-batch
if ! "$venv/bin/python" -c 'import duckdb, chdb' 2>/dev/null; then
  echo "run-batch.sh: installing duckdb and chdb into $venv ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'duckdb==2.0.1' 'chdb==4.4.0'
fi

if [ -z "${TALLY:-}" ]; then
  echo "run-batch.sh: building tally (release) ..." >&2
  cargo build --locked --release --bins
fi
tally=${TALLY:-target/release/tally}

mkdir -p "$out"
out=$(cd "$out" && pwd)
input="$out/clicks.ndjson"
catalog="$out/ads.csv"
if [ ! -s "$input" ] || [ "$(wc -l <"$input")" != "$clicks" ]; then
  "$tally" gen --clicks "$clicks" --output "$input" --catalog "$catalog" >/dev/null
fi
# The embedded log of the same clicks, imported once (not timed).
rm -rf "$out/log-data"
"$tally" --data-dir "$out/log-data" log import "$input" >/dev/null

times="$out/times.tsv"
: >"$times"
# measure ENGINE ROUND COMMAND...: one run under GNU time, its figures
# appended to times.tsv (engine, round, wall s, user s, sys s, peak KB).
measure() {
  local engine=$1 round=$2 stats
  shift 2
  stats=$(mktemp)
  if ! /usr/bin/time -f '%e %U %S %M' -o "$stats" "$@" >"$out/$engine.out" 2>&1; then
    echo "run-batch.sh: $engine failed:" >&2
    cat "$out/$engine.out" >&2
    exit 1
  fi
  read -r wall user sys rss <"$stats"
  rm -f "$stats"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$engine" "$round" "$wall" "$user" "$sys" "$rss" >>"$times"
}

for round in $(seq 1 "$runs"); do
  echo "run-batch.sh: round $round of $runs ..." >&2
  rm -f "$out/tally-rows.ndjson"
  measure "tally run FILE" "$round" "$tally" --data-dir "$out/file-data" run jobs/clicks.toml \
    --input "$input" --output "$out/tally-rows.ndjson" --catalog "$catalog" -w "$threads"
  rm -rf "$out/log-data/store"
  measure "tally run --bounded (log)" "$round" "$tally" --data-dir "$out/log-data" run jobs/embedded.toml \
    --bounded --catalog "$catalog" -w "$threads"
  measure duckdb "$round" "$venv/bin/python" bench/batch/peers.py duckdb "$input" "$catalog" "$out/duckdb-rows.csv" "$threads"
  measure chdb "$round" "$venv/bin/python" bench/batch/peers.py chdb "$input" "$catalog" "$out/chdb-rows.csv" "$threads"
done

"$venv/bin/python" bench/batch/peers.py check "$out/tally-rows.ndjson" "$out/duckdb-rows.csv" "$out/chdb-rows.csv"
python3 bench/batch/table.py "$times" "$clicks" | tee "$out/table.txt"
