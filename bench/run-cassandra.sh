#!/usr/bin/env bash
# tally's Cassandra store against its embedded store on the same clicks
# (bench/README.md, "run-cassandra.sh"). Starts its own Cassandra 5.0 node
# (scripts/cassandra.sh, under target/bench-cassandra/, on its own port),
# imports N generated clicks (`tally gen`, its defaults but the event-time
# rate) into a log once, then, R times, interleaved,
# each run on a fresh copy of that log:
#
#   embedded     tally run jobs/embedded.toml --bounded -w W (the embedded store)
#   cassandra    the same job committing to the node: jobs/cassandra.toml's
#                sink, replication factor 1, QUORUM, a job name per run
#
# and with --three, after the single node is stopped, R runs of
#
#   cassandra×3  the same on three nodes (127.0.0.2-4), replication factor
#                3, QUORUM, lightweight transactions at SERIAL
#
# Every Cassandra run records its epoch commits (TALLY_COMMIT_TIMES, one
# line per commit: src/store/cassandra/timing.rs). Then, while the single
# node still runs, the query API's latency under ingest load, `tally up` on
# the embedded store against `tally up --cassandra` on the node
# (`cargo bench --bench query`, bench/query.rs; its defaults, or its
# --smoke with --smoke; the same tally binary). Prints the tables, then
# lines for scripts:
#
#     embedded query p50 ms: X
#     embedded query p99 ms: X
#     cassandra query p50 ms: X
#     cassandra query p99 ms: X
#     ratio query p99 cassandra/embedded: X
#     embedded clicks/s: N
#     cassandra clicks/s: N
#     cassandra commit p50 ms: X
#     cassandra commit p99 ms: X
#     cassandra rows/s: N
#     ratio throughput embedded/cassandra: X
#
# (with --three also the cassandra3 lines). --smoke also runs `tally
# verify` on the last Cassandra run and fails on a mismatch, and the query
# bench fails if a read route never answered with rows; no figure is ever
# checked.
#
# Usage: bench/run-cassandra.sh [--smoke] [--clicks N] [--rate-per-s N] [--runs R]
#                               [--port P] [--workers W] [--three]
#   --smoke       20k clicks, 1 run, verified; the query bench's --smoke (CI;
#                 no thresholds)
#   --clicks      clicks in the log (default 300000)
#   --rate-per-s  clicks per second of event time (default 2000: an epoch of
#                 1 s holds 2,000 clicks, and a run catching up commits up to
#                 16 epochs at once)
#   --runs        runs of each row (default 3)
#   --port        the node's CQL port (default 29142; it takes P..P+2, and the
#                 three nodes take P+5..P+9)
#   --workers     worker threads of every run, the query bench's included
#                 (default 2)
#   --three       also the three-node rows
# Environment: TALLY overrides the tally binary (default target/release/tally,
# built here); CASSANDRA_HEAP the nodes' heap (scripts/cassandra.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

clicks=300000
rate=2000
runs=3
port=29142
workers=2
smoke=0
three=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; clicks=20000; runs=1; shift ;;
    --clicks) clicks=${2:?--clicks needs a value}; shift 2 ;;
    --rate-per-s) rate=${2:?--rate-per-s needs a value}; shift 2 ;;
    --runs) runs=${2:?--runs needs a value}; shift 2 ;;
    --port) port=${2:?--port needs a value}; shift 2 ;;
    --workers) workers=${2:?--workers needs a value}; shift 2 ;;
    --three) three=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-cassandra.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for n in "$clicks" "$rate" "$runs" "$port" "$workers"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "run-cassandra.sh: $n is not a positive integer" >&2; exit 2; }
done
[ "$port" -le 65520 ] || { echo "run-cassandra.sh: --port must leave room for P+9" >&2; exit 2; }

work=$root/target/bench-cassandra
tally=${TALLY:-$root/target/release/tally}
keyspace=tally_bench
mkdir -p "$work"

# --- set-up -------------------------------------------------------------------

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if [ -z "${TALLY:-}" ]; then
  echo "run-cassandra.sh: building tally (release) ..."
  cargo build --locked --release --bins
fi
# Built now, so that nothing is compiled between measured runs.
echo "run-cassandra.sh: building the query bench (bench/query.rs) ..."
cargo bench --locked --bench query --no-run

# Fresh clusters every invocation; stopped however this script ends.
clusters=("$work/node" "$work/three")
stop_all() {
  local c
  for c in "${clusters[@]}"; do scripts/cassandra.sh stop --dir "$c" >/dev/null 2>&1 || true; done
}
stop_all
rm -rf "${clusters[@]}"
trap stop_all EXIT

echo "run-cassandra.sh: $clicks clicks at $rate/s of event time into a log of 8 partitions ..."
rm -rf "$work/base" "$work"/data-* "$work"/*.tsv "$work"/*.out "$work"/*.times "$work"/*.toml "$work/query.txt"
"$tally" gen --clicks "$clicks" --rate-per-s "$rate" --output "$work/clicks.ndjson" --catalog "$work/ads.csv" 2>/dev/null
"$tally" --data-dir "$work/base" log import "$work/clicks.ndjson" >/dev/null

# --- helpers ------------------------------------------------------------------

# median, min and max of numbers, one a line on stdin: "MEDIAN MIN MAX"
stats() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "- - -"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    print m, v[1], v[NR] }'
}
# the P-th percentile (nearest rank) of numbers, one a line on stdin
percentile() {
  sort -g | awk -v p="$1" '{ v[NR] = $1 } END {
    if (NR == 0) { print "-"; exit }
    r = int(p / 100 * NR + 0.999999); if (r < 1) r = 1; if (r > NR) r = NR
    print v[r] }'
}
human() { awk -v n="$1" 'BEGIN { if (n == "-") print "-"; else if (n >= 1e6) printf "%.2fM", n / 1e6; else if (n >= 1e3) printf "%.1fk", n / 1e3; else printf "%d", n }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
ms() { awk -v us="$1" 'BEGIN { if (us == "-") print "-"; else printf "%.1f", us / 1000 }'; }

# CPU accounting in clock ticks: the machine's busy time (/proc/stat) and the
# running Cassandra nodes' (/proc/PID/stat), read before and after each run.
ticks_per_s=$(getconf CLK_TCK)
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
node_ticks() {
  local cluster pidfile total=0
  for cluster in "${clusters[@]}"; do
    for pidfile in "$cluster"/node-*/pid; do
      [ -f "$pidfile" ] || continue
      total=$((total + $(awk '{ print $14 + $15 }' "/proc/$(cat "$pidfile")/stat" 2>/dev/null || echo 0)))
    done
  done
  echo "$total"
}

# A fresh data directory holding a copy of the base log and salt.
fresh_data() {
  local data=$1
  rm -rf "$data"
  mkdir -p "$data"
  cp -r "$work/base/log" "$data/log"
  cp "$work/base/salt" "$data/salt"
}

# Runs the job once into OUT and sets r_eps (the job's own clicks/s: clicks
# ÷ the workers' run time, the final commit included), r_run (that run
# time, s), r_wall (s, the
# whole process), r_cpu (CPU-s of tally), r_nodes (cores the Cassandra
# nodes used meanwhile) and r_other (cores anything else used).
run_job() {
  local out=$1
  shift
  local busy0 nodes0 start end status=0 user sys
  busy0=$(busy_ticks)
  nodes0=$(node_ticks)
  start=$(date +%s%N)
  /usr/bin/time -f 'time: %U %S' -o "$out.time" "$@" >"$out" 2>&1 || status=$?
  end=$(date +%s%N)
  if [ "$status" != 0 ]; then
    tail -n 20 "$out" >&2
    echo "run-cassandra.sh: a run failed; output: $out" >&2
    exit 1
  fi
  read -r _ user sys < <(grep '^time:' "$out.time")
  local busy1 nodes1
  busy1=$(busy_ticks)
  nodes1=$(node_ticks)
  r_eps=$(sed -n 's/^done in .* s with .* workers: \([0-9]*\) clicks\/s.*/\1/p' "$out")
  r_run=$(sed -n 's/^done in \([0-9.]*\) s with .*/\1/p' "$out")
  if [ -z "$r_eps" ] || [ -z "$r_run" ]; then
    tail -n 20 "$out" >&2
    echo "run-cassandra.sh: a run ended without its report (stopped?); output: $out" >&2
    exit 1
  fi
  r_wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  r_cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
  r_nodes=$(awk -v t="$ticks_per_s" -v d="$((nodes1 - nodes0))" -v w="$r_wall" 'BEGIN { printf "%.2f", d / t / w }')
  r_other=$(awk -v t="$ticks_per_s" -v b="$((busy1 - busy0))" -v k="$((nodes1 - nodes0))" -v c="$r_cpu" -v w="$r_wall" \
    'BEGIN { l = ((b - k) / t - c) / w; printf "%.2f", l < 0 ? 0 : l }')
}

# One table line, and the run's figures appended to ROW.tsv. TIMES: the
# run's commit record, if any.
report() {
  local row=$1 run=$2 times=${3:-} commits=- share=-
  if [ -n "$times" ]; then
    commits=$(($(wc -l <"$times") - 1))
    share=$(awk -F'\t' -v s="$r_run" 'NR > 1 { us += $6 } END { printf "%.0f %%", us / 1e4 / s }' "$times")
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$r_eps" "$r_wall" "$r_cpu" "$r_nodes" "$r_other" >>"$work/$row.tsv"
  printf '%-11s | %d | %s | %s s | %s s | %s | %s | %s | %s | %s\n' "$row" "$run" "$(human "$r_eps")" "$r_run" "$r_wall" \
    "$r_cpu" "$r_nodes" "$r_other" "$commits" "$share"
}

run_embedded() {
  local run=$1 data=$work/data-embedded
  fresh_data "$data"
  run_job "$work/embedded-$run.out" "$tally" --data-dir "$data" run jobs/embedded.toml --bounded -w "$workers" \
    --catalog "$work/ads.csv"
  report embedded "$run"
}

# A job file like jobs/cassandra.toml, under a name of its own: a job of a
# name already committed would resume.
job_file() {
  local name=$1 hosts=$2 replication=$3
  cat <<EOF
name = "$name"
[source]
kind = "log"
partitions = 8
[sink]
kind = "cassandra"
hosts = "$hosts"
keyspace = "$keyspace"
replication_factor = $replication
consistency = "quorum"
serial_consistency = "serial"
EOF
}

# Runs the job into Cassandra once; ROW is cassandra or cassandra3.
run_cassandra() {
  local row=$1 run=$2 hosts=$3 replication=$4 data=$work/data-$1
  fresh_data "$data"
  job_file "bench_${row}_$run" "$hosts" "$replication" >"$work/$row-$run.toml"
  TALLY_COMMIT_TIMES=$work/$row-$run.times run_job "$work/$row-$run.out" \
    "$tally" --data-dir "$data" run "$work/$row-$run.toml" --bounded -w "$workers" --catalog "$work/ads.csv"
  report "$row" "$run" "$work/$row-$run.times"
  tail -n +2 "$work/$row-$run.times" >>"$work/$row-commits.tsv"
  if [ "$smoke" = 1 ]; then
    "$tally" --data-dir "$data" verify "$work/$row-$run.toml" --catalog "$work/ads.csv" | tee "$work/$row-verify.out"
    grep -q ', 0 mismatches' "$work/$row-verify.out" || { echo "run-cassandra.sh: verify found mismatches" >&2; exit 1; }
  fi
}

# --- runs ---------------------------------------------------------------------

echo "row         | run | clicks/s | run s | wall s | CPU-s | Cassandra (cores) | other load (cores) | commits | run time in commits"
node_hosts=$(scripts/cassandra.sh start --dir "$work/node" --port "$port" | tail -n 1)
for run in $(seq 1 "$runs"); do
  run_embedded "$run"
  run_cassandra cassandra "$run" "$node_hosts" 1
done
# Query API latency under load, on the same node; its tables and lines go
# into the summary.
echo "run-cassandra.sh: query API latency under ingest load (bench/query.rs) ..."
query_args=(--cassandra "$node_hosts" --workers "$workers")
[ "$smoke" = 0 ] || query_args+=(--smoke)
if ! TALLY=$tally cargo bench --locked --bench query -- "${query_args[@]}" >"$work/query.txt"; then
  cat "$work/query.txt"
  echo "run-cassandra.sh: the query bench failed" >&2
  exit 1
fi
scripts/cassandra.sh stop --dir "$work/node" >/dev/null 2>&1
if [ "$three" = 1 ]; then
  three_hosts=$(scripts/cassandra.sh start --nodes 3 --dir "$work/three" --port $((port + 5)) | tail -n 1)
  for run in $(seq 1 "$runs"); do
    run_cassandra cassandra3 "$run" "$three_hosts" 3
  done
fi

# --- summary ------------------------------------------------------------------

# "median" of a column of a row's table.
median_of() {
  local row=$1 col=$2
  [ -s "$work/$row.tsv" ] || { echo "-"; return; }
  cut -f"$col" "$work/$row.tsv" | stats | cut -d' ' -f1
}
# "p50 p99" in µs of a column of a row's commits (all runs pooled).
commit_percentiles() {
  local row=$1 col=$2
  echo "$(cut -f"$col" "$work/$row-commits.tsv" | percentile 50) $(cut -f"$col" "$work/$row-commits.tsv" | percentile 99)"
}
# Rows the apply wrote ÷ the time the applies took, all runs pooled.
rows_per_s() {
  awk -F'\t' '{ rows += $9; us += $4 } END { if (us == 0) print "-"; else printf "%.0f", rows / (us / 1e6) }' "$work/$1-commits.tsv"
}
# "p50 / p99" in ms of a column of a row's commits.
step() { echo "$(ms "$(cut -f"$2" "$work/$1-commits.tsv" | percentile 50)") / $(ms "$(cut -f"$2" "$work/$1-commits.tsv" | percentile 99)")"; }
commit_line() {
  local row=$1 name=$2 commits rows
  [ -s "$work/$row-commits.tsv" ] || return 0
  commits=$(wc -l <"$work/$row-commits.tsv")
  rows=$(awk -F'\t' '{ r += $9 } END { printf "%.0f", r / NR }' "$work/$row-commits.tsv")
  echo "| $name | $commits | $(step "$row" 6) | $(step "$row" 2) | $(step "$row" 3) | $(step "$row" 4) | $(step "$row" 5) | $rows | $(human "$(rows_per_s "$row")") |"
}
row_line() {
  local row=$1 name=$2
  [ -s "$work/$row.tsv" ] || return 0
  local eps lo hi
  read -r eps lo hi < <(cut -f1 "$work/$row.tsv" | stats)
  echo "| $name | $(human "$eps") ($(human "$lo")–$(human "$hi")) | $(median_of "$row" 2) | $(median_of "$row" 3) | $(median_of "$row" 4) | $(median_of "$row" 5) |"
}

echo
echo "$clicks clicks at $rate/s of event time, jobs/embedded.toml's job (8 partitions, -w $workers); $runs run(s) per row, medians; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| store | clicks/s median (min–max) | wall s | CPU-s | Cassandra cores | other load |"
echo "|---|---|---|---|---|---|"
row_line embedded "embedded (redb)"
row_line cassandra "Cassandra 5.0, 1 node, RF 1, QUORUM"
row_line cassandra3 "Cassandra 5.0, 3 nodes, RF 3, QUORUM"
echo
echo "epoch commits (ms, p50 / p99, every run's commits pooled)"
echo "| store | commits | whole | stage | commit LWT | apply | mark applied | rows per commit | apply rows/s |"
echo "|---|---|---|---|---|---|---|---|---|"
commit_line cassandra "1 node"
commit_line cassandra3 "3 nodes"
cat "$work/query.txt"
echo
embedded_eps=$(median_of embedded 1)
cassandra_eps=$(median_of cassandra 1)
read -r c_p50 c_p99 <<<"$(commit_percentiles cassandra 6)"
echo "embedded clicks/s: $embedded_eps"
echo "cassandra clicks/s: $cassandra_eps"
echo "cassandra commit p50 ms: $(ms "$c_p50")"
echo "cassandra commit p99 ms: $(ms "$c_p99")"
echo "cassandra rows/s: $(rows_per_s cassandra)"
if [ "$three" = 1 ]; then
  cassandra3_eps=$(median_of cassandra3 1)
  read -r t_p50 t_p99 <<<"$(commit_percentiles cassandra3 6)"
  echo "cassandra3 clicks/s: $cassandra3_eps"
  echo "cassandra3 commit p50 ms: $(ms "$t_p50")"
  echo "cassandra3 commit p99 ms: $(ms "$t_p99")"
  echo "cassandra3 rows/s: $(rows_per_s cassandra3)"
  echo "ratio throughput embedded/cassandra3: $(ratio "$embedded_eps" "$cassandra3_eps")"
fi
echo "ratio throughput embedded/cassandra: $(ratio "$embedded_eps" "$cassandra_eps")"
