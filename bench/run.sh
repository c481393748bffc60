#!/usr/bin/env bash
# tally and its peers side by side on this machine, in one invocation
# (bench/README.md): the Flink DataStream and SQL jobs (core and
# checkpointed), DuckDB and chDB (batch, through bench/run-batch.sh). Sets
# up what it needs on a fresh machine: the tally release build, Flink 2.3
# from Maven Central (bench/flink/run.sh builds it on first use into
# bench/flink/.cache/), DuckDB and chDB from PyPI (bench/.cache/venv-batch),
# and a Python with matplotlib for the plot (bench/.cache/venv). Then runs
# bench/compare.rs, which prints the table and ends with one
# machine-readable line per comparison and peer:
#
#     ratio core tally/flink-datastream: X
#     ratio core tally/flink-datastream-keyed: X
#     ratio core tally/flink-sql: X
#     ratio core tally/flink: X            (the SQL job, as before)
#     ratio checkpointed tally/...: X      (the same peers)
#     ratio batch tally/duckdb: X
#     ratio batch tally/chdb: X
#     e2e clicks/s: N
#
# and draws the figures into a PNG.
#
# Usage: bench/run.sh [--smoke] [--out DIR] [compare flags...]
#   --smoke   seconds, not minutes: 200k clicks, one run of each row, short
#             end-to-end and memory runs (CI runs this; no thresholds)
#   --out     where compare.json and compare.png go (default bench/results,
#             with --smoke target/bench-smoke)
#   other flags go to bench/compare.rs: --runs R, --clicks N, --rate R,
#   --e2e-seconds S, --memory-seconds S,
#   --only core,checkpointed,batch,e2e,memory, --no-flink
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

smoke=0
out=
flags=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; flags+=(--smoke); shift ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) flags+=("$1"); shift ;;
  esac
done
if [ -z "$out" ]; then
  if [ "$smoke" = 1 ]; then out=target/bench-smoke; else out=bench/results; fi
fi
mkdir -p "$out"

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
for tool in cargo java mvn python3; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (needs Rust, a JDK 17+, Maven and Python 3)" >&2; exit 1; }
done

# Python for the plot, in a git-ignored virtual environment.
venv=bench/.cache/venv
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  echo "run.sh: installing matplotlib into $venv ..."
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'matplotlib==3.11.2'
fi

echo "run.sh: building tally (release) ..."
cargo build --locked --release --bins
cargo bench --locked --no-run --bench compare

# The Flink DataStream job's rows against tally's on one small shared input
# (tally gen's NDJSON file and catalog: retries, late clicks, ads missing
# from the catalog): every window's clicks must be equal, or nothing is
# measured. The generated streams of the timed rows are not byte-identical
# (bench/flink/README.md), so the rows are checked here, on a file both read.
no_flink=0
for flag in ${flags[@]+"${flags[@]}"}; do [ "$flag" != --no-flink ] || no_flink=1; done
if [ "$no_flink" = 0 ]; then
  check=target/bench-compare/rows-check
  rm -rf "$check" && mkdir -p "$check"
  echo "run.sh: checking the Flink DataStream job's rows against tally's (200k clicks) ..." >&2
  target/release/tally gen --clicks 200000 --output "$check/clicks.ndjson" --catalog "$check/ads.csv" >/dev/null
  target/release/tally --data-dir "$check/data" run jobs/clicks.toml --input "$check/clicks.ndjson" \
    --output "$check/tally-rows.ndjson" --catalog "$check/ads.csv" -w 2 2>"$check/tally.log" >/dev/null
  bench/flink/run.sh --rows-check "$check/tally-rows.ndjson" "$check/clicks.ndjson" "$check/ads.csv" | tee "$out/rows-check.txt"
fi

cargo bench --locked --bench compare -- --json "$out/compare.json" ${flags[@]+"${flags[@]}"} | tee "$out/compare.txt"
"$venv/bin/python" bench/plot.py "$out/compare.json" "$out/compare.png"
echo "run.sh: table in $out/compare.txt, figures in $out/compare.json, plot in $out/compare.png" >&2
