#!/usr/bin/env bash
# tally and Apache Flink reading the same Kafka topic (bench/README.md,
# "run-kafka.sh"). Starts its own Kafka broker (scripts/kafka.sh, under
# target/bench-kafka/, on its own port), loads topic raw_clicks with N
# generated clicks keyed by request id (KafkaLoad in bench/flink/), then,
# R times, interleaved:
#
#   flink        KafkaClicksJob (bench/flink/run.sh --mode kafka), parallelism 2
#   tally 1p     tally run jobs/kafka.toml --bounded, one process, -w W
#   tally 2p     scripts/cluster.sh jobs/kafka.toml 2 1 -- --bounded
#
# (tally with --data-dir on a fresh directory, --brokers, and the
# generator's catalog, which the Flink job holds in memory)
#
# each reading the topic from its start to the end offsets found at start.
# Prints a table, then lines for scripts:
#
#     kafka load clicks/s: N
#     kafka flink events/s: N
#     kafka tally 1p events/s: N
#     kafka tally 2p events/s: N
#     ratio kafka tally/flink: X
#     ratio kafka tally 2p/flink: X
#
# Usage: bench/run-kafka.sh [--smoke] [--clicks N] [--runs R] [--port BASE]
#                           [--workers W] [--no-flink] [--no-tally]
#   --smoke     200k clicks, 1 run, rows checked (CI; no thresholds)
#   --clicks    clicks in the topic (default 5000000)
#   --runs      runs of each row (default 3)
#   --port      the broker's port (default 29092; its controller BASE+1)
#   --workers   worker threads of the one-process tally run (default 2, the
#               Flink job's parallelism)
#   --no-flink, --no-tally   leave one side out
# Environment: TALLY overrides the tally binary (default target/release/tally,
# built here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

clicks=5000000
runs=3
port=29092
workers=2
smoke=0
flink=1
tally_side=1
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; clicks=200000; runs=1; shift ;;
    --clicks) clicks=${2:?--clicks needs a value}; shift 2 ;;
    --runs) runs=${2:?--runs needs a value}; shift 2 ;;
    --port) port=${2:?--port needs a value}; shift 2 ;;
    --workers) workers=${2:?--workers needs a value}; shift 2 ;;
    --no-flink) flink=0; shift ;;
    --no-tally) tally_side=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-kafka.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for n in "$clicks" "$runs" "$port" "$workers"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "run-kafka.sh: $n is not a positive integer" >&2; exit 2; }
done

work=$root/target/bench-kafka
kafka_dir=$work/kafka
topic=raw_clicks
tally=${TALLY:-$root/target/release/tally}
mkdir -p "$work"

# --- set-up -------------------------------------------------------------------

for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "run-kafka.sh: $tool not found (needs a JDK 17+ and Maven)" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "run-kafka.sh: /usr/bin/time not found (Debian: apt-get install time)" >&2; exit 1; }

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if [ "$tally_side" = 1 ] && [ -z "${TALLY:-}" ]; then
  echo "run-kafka.sh: building tally (release) ..."
  cargo build --locked --release --bins
fi
bench/flink/run.sh --build-only
flink_cache=${FLINK_BENCH_CACHE:-$root/bench/flink/.cache}
classpath="$flink_cache/target/classes:$(cat "$flink_cache/classpath.txt")"

# A fresh broker every invocation; stopped however this script ends.
scripts/kafka.sh stop --dir "$kafka_dir" >/dev/null 2>&1 || true
rm -rf "$kafka_dir"
trap 'scripts/kafka.sh stop --dir "$kafka_dir" >/dev/null 2>&1 || true' EXIT
bootstrap=$(scripts/kafka.sh start --dir "$kafka_dir" --port "$port" | tail -n 1)

echo "run-kafka.sh: loading $clicks clicks into $topic on $bootstrap ..."
java -Xmx1g -cp "$classpath" tally.bench.flink.kafka.KafkaLoad --bootstrap "$bootstrap" --topic "$topic" \
  --clicks "$clicks" --partitions 8 | tee "$work/load.out"
load_eps=$(sed -n 's/^load clicks\/s: //p' "$work/load.out")

# --- helpers ------------------------------------------------------------------

# median, min and max of numbers, one a line on stdin: "MEDIAN MIN MAX"
stats() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "- - -"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    print m, v[1], v[NR] }'
}
human() { awk -v n="$1" 'BEGIN { if (n == "-") print "-"; else if (n >= 1e6) printf "%.2fM", n / 1e6; else if (n >= 1e3) printf "%.1fk", n / 1e3; else printf "%d", n }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }

# CPU accounting, in clock ticks: the machine's busy time (/proc/stat) and
# the broker's (/proc/PID/stat), read before and after each run.
ticks_per_s=$(getconf CLK_TCK)
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
broker_ticks() { awk '{ print $14 + $15 }' "/proc/$(cat "$kafka_dir/broker-0/pid")/stat"; }

# Runs a command under GNU time into OUT (stdout and stderr) and sets
# m_wall (s), m_cpu (CPU-s of the command and everything it waited for),
# m_rss (largest RSS of one of its processes, MiB), m_broker (cores the
# broker used meanwhile) and m_other (cores anything else used). Returns
# the command's status.
measured() {
  local out=$1
  shift
  local busy0 broker0 start end status=0
  busy0=$(busy_ticks)
  broker0=$(broker_ticks)
  start=$(date +%s%N)
  /usr/bin/time -f 'time: %e %U %S %M' -o "$out.time" "$@" >"$out" 2>&1 || status=$?
  end=$(date +%s%N)
  local busy1 broker1 user sys rss_kib
  busy1=$(busy_ticks)
  broker1=$(broker_ticks)
  read -r _ _ user sys rss_kib < <(grep '^time:' "$out.time")
  m_wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  m_cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
  m_rss=$((rss_kib / 1024))
  m_broker=$(awk -v t="$ticks_per_s" -v d="$((broker1 - broker0))" -v w="$m_wall" 'BEGIN { printf "%.2f", d / t / w }')
  m_other=$(awk -v t="$ticks_per_s" -v b="$((busy1 - busy0))" -v k="$((broker1 - broker0))" -v c="$m_cpu" -v w="$m_wall" \
    'BEGIN { l = ((b - k) / t - c) / w; printf "%.2f", l < 0 ? 0 : l }')
  return "$status"
}

# One table line and one figures line (events/s, wall, CPU-s, RSS, broker, other).
report() {
  local row=$1 run=$2 eps=$3
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$eps" "$m_wall" "$m_cpu" "$m_rss" "$m_broker" "$m_other" >>"$work/$row.tsv"
  printf '%-9s | %d | %s | %s s | %s | %s MiB | %s | %s\n' "$row" "$run" "$(human "$eps")" "$m_wall" "$m_cpu" "$m_rss" "$m_broker" "$m_other"
}

# --- the Flink side -----------------------------------------------------------
#
# events/s is Flink's own figure (clicks ÷ the job's net run time, as
# bench/flink/run.sh reports it: deployment included, the JVM's and the
# MiniCluster's start left out); the other columns cover the whole JVM.

run_flink() {
  local run=$1
  local out=$work/flink-$run.out
  local check=()
  [ "$smoke" = 0 ] || check=(--check)
  if ! measured "$out" bench/flink/run.sh --mode kafka --runs 1 -- --bootstrap "$bootstrap" --topic "$topic" \
    ${check[@]+"${check[@]}"}; then
    tail -n 20 "$out" >&2
    echo "run-kafka.sh: Flink run $run failed; output: $out" >&2
    return 1
  fi
  report flink "$run" "$(sed -n 's/^flink kafka events\/s: //p' "$out")"
  grep -E '^flink (read|check):' "$out" | sed 's/^/    /'
  echo "    consumer lag (s:records): $(sed -n 's/^flink lag samples (s:records): //p' "$out")"
}

# --- the tally side -----------------------------------------------------------
#
# tally reads the topic with its Kafka source: jobs/kafka.toml has
# [source] kind = "kafka", topic = "raw_clicks", partitions = 8 and the store
# sink; `tally run --brokers HOSTS` overrides the job's brokers, and the job
# creates the topic if missing (here it exists). Offsets live in tally's own
# epoch commits, not in a consumer group, so its lag cannot be sampled from
# Kafka: the figure is clicks ÷ the wall time of the whole command (process
# start, Kafka connection, reading, the final commit, exit).

tally_has_kafka() {
  [ -x "$tally" ] && [ -f jobs/kafka.toml ] && "$tally" run --help 2>/dev/null | grep -q -- '--brokers'
}

# Runs the job once with PROCESSES processes on a fresh data directory.
run_tally() {
  local processes=$1 run=$2
  local row=tally-${processes}p
  local data=$work/$row-$run out=$work/$row-$run.out state=$work/cluster-${processes}p
  rm -rf "$data" "$state"
  local args=(--bounded --data-dir "$data" --brokers "$bootstrap" --catalog "$work/ads.csv") cmd
  if [ "$processes" = 1 ]; then
    cmd=("$tally" run jobs/kafka.toml "${args[@]}" -w "$workers")
  else
    cmd=(scripts/cluster.sh jobs/kafka.toml "$processes" 1 --state "$state" --tally "$tally" --max-restarts 0 -- "${args[@]}")
  fi
  if ! measured "$out" "${cmd[@]}"; then
    tail -n 20 "$out" >&2
    echo "run-kafka.sh: tally ${processes}p run $run failed; output: $out" >&2
    return 1
  fi
  report "$row" "$run" "$(awk -v n="$clicks" -v w="$m_wall" 'BEGIN { printf "%.0f", n / w }')"
  # Every process prints "read N clicks: ..."; a cluster's are in its logs.
  local logs=("$out")
  [ "$processes" = 1 ] || logs=("$state"/p*.log)
  local read_clicks
  read_clicks=$(cat "${logs[@]}" | sed -n 's/^read \([0-9]*\) clicks.*/\1/p' | awk '{ s += $1 } END { print s + 0 }')
  echo "    read $read_clicks clicks$([ "$read_clicks" = "$clicks" ] || echo ", NOT the $clicks of the topic")"
}

# --- runs, interleaved ----------------------------------------------------------

rm -f "$work"/flink.tsv "$work"/tally-*p.tsv
if [ "$tally_side" = 1 ] && ! tally_has_kafka; then
  echo "run-kafka.sh: tally side not run: $tally has no Kafka source (no --brokers in 'tally run --help', or no jobs/kafka.toml)" >&2
  tally_side=0
fi
if [ "$tally_side" = 1 ]; then
  # The generator's catalog, as the Flink job holds it in memory: campaigns
  # and advertisers are counted alike on both sides.
  "$tally" gen --clicks 1 --output /dev/null --catalog "$work/ads.csv" 2>/dev/null
fi
echo "row       | run | events/s | wall s | CPU-s | peak RSS | broker (cores) | other load (cores)"
for run in $(seq 1 "$runs"); do
  [ "$flink" = 0 ] || run_flink "$run"
  if [ "$tally_side" = 1 ]; then
    run_tally 1 "$run"
    run_tally 2 "$run"
  fi
done

# "median (min–max)" of a column of a row's table.
column() {
  local row=$1 col=$2
  [ -s "$work/$row.tsv" ] || { echo "- - -"; return; }
  cut -f"$col" "$work/$row.tsv" | stats
}
row_line() {
  local row=$1 name=$2 eps lo hi
  [ -s "$work/$row.tsv" ] || return 0
  read -r eps lo hi < <(column "$row" 1)
  echo "| $name | $(human "$eps") ($(human "$lo")–$(human "$hi")) | $(column "$row" 2 | cut -d' ' -f1) | $(column "$row" 3 | cut -d' ' -f1) | $(column "$row" 4 | cut -d' ' -f3) MiB | $(column "$row" 5 | cut -d' ' -f1) | $(column "$row" 6 | cut -d' ' -f3) |"
}
read -r flink_eps _ _ < <(column flink 1)
read -r t1_eps _ _ < <(column tally-1p 1)
read -r t2_eps _ _ < <(column tally-2p 1)
echo
echo "Kafka 4.4 broker on $bootstrap, topic $topic: $clicks clicks in 8 partitions; $runs run(s) per row, medians"
echo "| engine | events/s median (min–max) | wall s | CPU-s | peak RSS (max) | broker cores | other load (max) |"
echo "|---|---|---|---|---|---|---|"
row_line flink "Flink $(sed -n 's/^flink kafka version: //p' "$work/flink-1.out" 2>/dev/null) DataStream, parallelism 2"
row_line tally-1p "tally, 1 process, -w $workers"
row_line tally-2p "tally, 2 processes × 1 worker"
echo
echo "kafka load clicks/s: $load_eps"
echo "kafka flink events/s: $flink_eps"
echo "kafka tally 1p events/s: $t1_eps"
echo "kafka tally 2p events/s: $t2_eps"
echo "ratio kafka tally/flink: $(ratio "$t1_eps" "$flink_eps")"
echo "ratio kafka tally 2p/flink: $(ratio "$t2_eps" "$flink_eps")"
