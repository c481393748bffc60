#!/usr/bin/env bash
# The clicks job in Flink SQL, or in the DataStream API, on a local MiniCluster
# (bench/flink/README.md). Builds it on first use (Maven, into bench/flink/.cache/),
# runs it R times, each in a fresh JVM, and prints every run, the median and
# min–max, and closing `flink <mode> ...: value` lines for scripts (the
# DataStream job's: `flink-datastream <mode> ...` with --dedup split,
# `flink-datastream-keyed <mode> ...` with --dedup keyed).
#
# Usage: bench/flink/run.sh [--job sql|datastream] [--dedup split|keyed]
#          [--mode core|checkpointed|generator|kafka] [--clicks N]
#          [--runs R] [--rate-per-s R] [--parallelism P] [--heap SIZE]
#          [--timeout S] [--smoke] [--build-only]
#          [--rows-check TALLY_ROWS CLICKS CATALOG] [-- job flags...]
#   --job        sql: ClicksJob, Flink SQL (default); datastream: DataStreamJob
#   --dedup      datastream only: split (default): retries dropped in the source
#                task, per split; keyed: keyBy(request id), ValueState with TTL
#   --mode       core: no checkpoints (default); checkpointed: exactly-once
#                checkpoints every 2 s; generator: the source alone;
#                kafka: the DataStream job over a Kafka topic (KafkaClicksJob,
#                flags after -- such as --bootstrap B --topic T; --clicks and
#                --rate-per-s do not apply: the topic holds the clicks)
#   --clicks     clicks per run (default 5000000)
#   --runs       runs (default 3)
#   --rate-per-s event-time rate of the generated clicks (default 1000000)
#   --parallelism Flink parallelism (default 2)
#   --heap       JVM heap limit, -Xmx (default 8g)
#   --timeout    seconds per run before the JVM is killed (default 900)
#   --smoke      200k clicks, 1 run, rows counted and checked (CI)
#   --build-only build (when the sources changed) and exit
#   --rows-check (implies --job datastream) the DataStream job once over the NDJSON file CLICKS with the
#                catalog CSV CATALOG, its rows written to a CSV file, then
#                bench/batch/peers.py check TALLY_ROWS (tally's rows of the
#                same file) against them: every window's clicks must be equal
# Environment: FLINK_BENCH_CACHE overrides the cache folder.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${FLINK_BENCH_CACHE:-$here/.cache}
job_api=
dedup=
mode=core
clicks=5000000
runs=3
rate=1000000
parallelism=2
heap=8g
timeout_s=900
smoke=0
build_only=0
rows_check=()
job_flags=()

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --job) job_api=${2:?--job needs a value}; shift 2 ;;
    --dedup) dedup=${2:?--dedup needs a value}; shift 2 ;;
    --mode) mode=${2:?--mode needs a value}; shift 2 ;;
    --clicks) clicks=${2:?--clicks needs a value}; shift 2 ;;
    --runs) runs=${2:?--runs needs a value}; shift 2 ;;
    --rate-per-s) rate=${2:?--rate-per-s needs a value}; shift 2 ;;
    --parallelism) parallelism=${2:?--parallelism needs a value}; shift 2 ;;
    --heap) heap=${2:?--heap needs a value}; shift 2 ;;
    --timeout) timeout_s=${2:?--timeout needs a value}; shift 2 ;;
    --smoke) smoke=1; shift ;;
    --build-only) build_only=1; shift ;;
    --rows-check)
      [ $# -ge 4 ] || { echo "run.sh: --rows-check needs TALLY_ROWS CLICKS CATALOG" >&2; exit 2; }
      rows_check=("$2" "$3" "$4"); shift 4 ;;
    --) shift; job_flags+=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
done
# --rows-check runs the DataStream job.
[ ${#rows_check[@]} = 0 ] || job_api=${job_api:-datastream}
job_api=${job_api:-sql}
case "$job_api" in
  sql)
    [ -z "$dedup" ] || { echo "run.sh: --dedup applies to --job datastream" >&2; exit 2; }
    [ ${#rows_check[@]} = 0 ] || { echo "run.sh: --rows-check runs --job datastream" >&2; exit 2; }
    case "$mode" in core|checkpointed|generator|kafka) ;; *) echo "run.sh: --mode must be core, checkpointed, generator or kafka" >&2; exit 2 ;; esac
    ;;
  datastream)
    dedup=${dedup:-split}
    case "$dedup" in split|keyed) ;; *) echo "run.sh: --dedup must be split or keyed" >&2; exit 2 ;; esac
    case "$mode" in core|checkpointed) ;; *) echo "run.sh: --job datastream takes --mode core or checkpointed" >&2; exit 2 ;; esac
    ;;
  *) echo "run.sh: --job must be sql or datastream" >&2; exit 2 ;;
esac
# The name of the runs' logs and the start of the closing lines.
case "$job_api/$dedup" in
  sql/) name=$mode; prefix="flink $mode" ;;
  datastream/split) name=datastream-$mode; prefix="flink-datastream $mode" ;;
  datastream/keyed) name=datastream-keyed-$mode; prefix="flink-datastream-keyed $mode" ;;
esac
for n in "$clicks" "$runs" "$rate" "$parallelism" "$timeout_s"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: $n is not a positive integer" >&2; exit 2; }
done
if [ "$smoke" = 1 ]; then
  clicks=200000
  runs=1
  timeout_s=300
  [ "$mode" = generator ] || job_flags+=(--check)
fi

for tool in java mvn timeout; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (needs a JDK 17+, Maven 3.6+ and coreutils)" >&2; exit 1; }
done
java_major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
if [ "${java_major%%.*}" -lt 17 ] 2>/dev/null; then
  echo "run.sh: needs Java 17 or newer, found $java_major" >&2
  exit 1
fi

# Build: compile, and resolve the dependencies from Maven Central into the
# cache's own local repository; again only when the sources or the POM change.
mkdir -p "$cache"
stamp=$cache/build.stamp
if [ ! -f "$stamp" ] || [ ! -f "$cache/classpath.txt" ] ||
   [ -n "$(find "$here/pom.xml" "$here/src" -newer "$stamp" -print -quit)" ]; then
  echo "building bench/flink (Maven; the first build downloads Flink into $cache/m2) ..."
  build_start=$(date +%s%N)
  if ! mvn -B -q -f "$here/pom.xml" -Dmaven.repo.local="$cache/m2" -Dflink.bench.target="$cache/target" \
    compile dependency:build-classpath -Dmdep.outputFile="$cache/classpath.txt" -Dmdep.includeScope=runtime \
    >"$cache/build.log" 2>&1; then
    tail -n 40 "$cache/build.log" >&2
    echo "run.sh: the build failed; log: $cache/build.log" >&2
    exit 1
  fi
  touch "$stamp"
  build_ms=$(( ($(date +%s%N) - build_start) / 1000000 ))
  printf 'flink build s: %d.%d\n' $((build_ms / 1000)) $((build_ms % 1000 / 100))
fi
classpath="$cache/target/classes:$(cat "$cache/classpath.txt")"
[ "$build_only" = 0 ] || exit 0

# Flink's JVM options for Java 17 (its own launcher's defaults).
jvm_opts=(
  -Xmx"$heap"
  --add-exports=java.base/sun.net.util=ALL-UNNAMED
  --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED
  --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.text=ALL-UNNAMED
  --add-opens=java.base/java.time=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED
)

logs=$cache/runs
mkdir -p "$logs"
rm -f "$logs/$name"-*.out "$logs/$name"-*.log
field() { sed -n "s|^flink $1: ||p" "$2" | head -n 1; }
# median, min and max of numbers, one a line on stdin: "MEDIAN MIN MAX"
stats() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "- - -"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    print m, v[1], v[NR] }'
}
human() { awk -v n="$1" 'BEGIN { if (n >= 1e6) printf "%.2fM", n / 1e6; else if (n >= 1e3) printf "%.1fk", n / 1e3; else printf "%d", n }'; }

if [ ${#rows_check[@]} -gt 0 ]; then
  # File mode: the job's rows of tally's click file, compared with tally's rows.
  tally_rows=${rows_check[0]}
  for f in "${rows_check[@]}"; do [ -f "$f" ] || { echo "run.sh: $f not found" >&2; exit 1; }; done
  command -v python3 >/dev/null || { echo "run.sh: --rows-check needs python3" >&2; exit 1; }
  out=$logs/$name-rows.out
  err=$logs/$name-rows.log
  csv=$logs/$name-rows.csv
  echo "flink bench: rows check, job datastream (dedup $dedup), mode $mode, parallelism $parallelism, clicks from ${rows_check[1]}"
  status=0
  timeout -k 10 "$timeout_s" java "${jvm_opts[@]}" -cp "$classpath" tally.bench.flink.datastream.DataStreamJob \
    --mode "$mode" --dedup "$dedup" --parallelism "$parallelism" \
    --input "${rows_check[1]}" --catalog "${rows_check[2]}" --rows-out "$csv" \
    ${job_flags[@]+"${job_flags[@]}"} >"$out" 2>"$err" || status=$?
  if [ "$status" != 0 ]; then
    cat "$out"
    tail -n 30 "$err" >&2
    echo "run.sh: the file run failed with status $status; log: $err" >&2
    exit 1
  fi
  grep -E '^flink (clicks|elapsed s|events/s|read|rows written):' "$out" || true
  python3 "$here/../batch/peers.py" check "$tally_rows" "$csv"
  exit $?
fi

if [ "$mode" = kafka ]; then
  main=(tally.bench.flink.kafka.KafkaClicksJob --parallelism "$parallelism")
  echo "flink bench: mode kafka, parallelism $parallelism, $runs run(s), heap $heap"
elif [ "$job_api" = datastream ]; then
  main=(tally.bench.flink.datastream.DataStreamJob --mode "$mode" --dedup "$dedup" --clicks "$clicks" --rate-per-s "$rate" --parallelism "$parallelism")
  echo "flink bench: job datastream (dedup $dedup), mode $mode, $clicks clicks at $rate clicks/s of event time, parallelism $parallelism, $runs run(s), heap $heap"
else
  main=(tally.bench.flink.ClicksJob --mode "$mode" --clicks "$clicks" --rate-per-s "$rate" --parallelism "$parallelism")
  echo "flink bench: mode $mode, $clicks clicks at $rate clicks/s of event time, parallelism $parallelism, $runs run(s), heap $heap"
fi
echo "run | events/s | elapsed s | startup s | events/s from 1st click | events per task CPU-s | GC s | peak RSS MiB | other load (cores) | checkpoints"
: >"$logs/summary.tsv"
for run in $(seq 1 "$runs"); do
  out=$logs/$name-$run.out
  err=$logs/$name-$run.log
  status=0
  timeout -k 10 "$timeout_s" java "${jvm_opts[@]}" -cp "$classpath" "${main[@]}" \
    ${job_flags[@]+"${job_flags[@]}"} >"$out" 2>"$err" || status=$?
  if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    echo "run.sh: run $run timed out after ${timeout_s}s and was killed; log: $err" >&2
    exit 1
  elif [ "$status" != 0 ]; then
    cat "$out"
    tail -n 30 "$err" >&2
    echo "run.sh: run $run failed with status $status; log: $err" >&2
    exit 1
  fi
  eps=$(field 'events/s' "$out")
  printf '%s | %s | %s | %s | %s | %s | %s | %s | %s | %s\n' "$run" "$(human "$eps")" "$(field 'elapsed s' "$out")" \
    "$(field 'startup s' "$out")" "$(human "$(field 'events/s processing' "$out")")" \
    "$(human "$(field 'events per task cpu s' "$out")")" "$(field 'gc s' "$out")" \
    "$(field 'peak rss mib' "$out")" "$(field 'other load cores' "$out")" "$(field 'checkpoints completed' "$out")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$eps" "$(field 'elapsed s' "$out")" "$(field 'peak rss mib' "$out")" \
    "$(field 'other load cores' "$out")" "$(field 'events per task cpu s' "$out")" \
    "$(field 'events/s processing' "$out")" "$(field 'cpu s' "$out")" "$(field 'checkpoints completed' "$out")" >>"$logs/summary.tsv"
  grep -E '^flink (rows |generated:|dropped:|read:|check:|lag samples)' "$out" || true
done

read -r eps_med eps_min eps_max < <(cut -f1 "$logs/summary.tsv" | stats)
read -r el_med _ _ < <(cut -f2 "$logs/summary.tsv" | stats)
read -r rss_med _ rss_max < <(cut -f3 "$logs/summary.tsv" | stats)
read -r _ _ load_max < <(cut -f4 "$logs/summary.tsv" | stats)
read -r task_med _ _ < <(cut -f5 "$logs/summary.tsv" | stats)
read -r proc_med _ _ < <(cut -f6 "$logs/summary.tsv" | stats)
read -r cpu_med _ _ < <(cut -f7 "$logs/summary.tsv" | stats)
read -r checkpoints_med _ _ < <(cut -f8 "$logs/summary.tsv" | grep -v '^$' | stats)
version=$(field version "$out")
job=$(field job "$out")
echo "Flink $version, ${job:-source only}"
echo "events/s median $(human "$eps_med") (min $(human "$eps_min"), max $(human "$eps_max")); elapsed s median $el_med; peak RSS MiB median $rss_med (max $rss_max); other load up to $load_max cores"
if grep -q '^flink check: FAILED' "$logs"/"$name"-*.out; then
  echo "run.sh: the row check failed" >&2
  exit 1
fi
echo "$prefix version: $version"
[ "$mode" != kafka ] || clicks=$(field clicks "$out")
echo "$prefix clicks: $clicks"
echo "$prefix runs: $runs"
echo "$prefix events/s: $eps_med"
echo "$prefix events/s min: $eps_min"
echo "$prefix events/s max: $eps_max"
echo "$prefix elapsed s: $el_med"
echo "$prefix events/s processing: $proc_med"
echo "$prefix events per task cpu s: $task_med"
echo "$prefix cpu s: $cpu_med"
[ "$checkpoints_med" = - ] || echo "$prefix checkpoints: $checkpoints_med"
echo "$prefix peak rss mib: $rss_max"
echo "$prefix other load cores: $load_max"
