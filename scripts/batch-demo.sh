#!/usr/bin/env bash
# A batch run of the default job: builds the release binary, generates a
# demo input into ./tally-data/ (once), runs the default job on it with two
# workers and prints a short summary of the rows.
#
#     scripts/batch-demo.sh                 # the demo
#     scripts/batch-demo.sh -w 1            # extra arguments go to `tally run`
#     scripts/batch-demo.sh --input my.ndjson --catalog my.csv --output my-rows.ndjson
#
# Flags given here replace the script's own --input, --catalog, --output and
# -w; the summary reads whatever --output ends up being. Relative paths are
# taken from the repository root, where this script runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DATA=tally-data
DEMO_CLICKS=1000000
JOB=jobs/clicks.toml
TALLY=target/release/tally

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "batch-demo.sh: cargo not found; scripts/test.sh shows how to get it" >&2; exit 1; }

# Which of our defaults the caller overrides; --output is kept for the summary.
input="$DATA/clicks.ndjson"
catalog="$DATA/ads.csv"
output="$DATA/rows.ndjson"
own_input=1 own_catalog=1 own_output=1 own_workers=1
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --input) own_input=0 ;;
        --input=*) own_input=0 ;;
        --catalog | --catalog=*) own_catalog=0 ;;
        --output) own_output=0 output="${args[i + 1]:-}" ;;
        --output=*) own_output=0 output="${args[i]#--output=}" ;;
        -w | -w* | --workers | --workers=*) own_workers=0 ;;
    esac
done

echo "==> build"
cargo build --release --bin tally

mkdir -p "$DATA"
if [ "$own_input" = 1 ] && { [ ! -s "$DATA/clicks.ndjson" ] || [ ! -s "$DATA/ads.csv" ]; }; then
    echo "==> generate $DEMO_CLICKS demo clicks into $DATA/"
    "$TALLY" gen --clicks "$DEMO_CLICKS" --output "$DATA/clicks.ndjson" --catalog "$DATA/ads.csv"
fi

run_args=()
[ "$own_input" = 1 ] && run_args+=(--input "$input")
[ "$own_catalog" = 1 ] && run_args+=(--catalog "$catalog")
[ "$own_output" = 1 ] && run_args+=(--output "$output")
[ "$own_workers" = 1 ] && run_args+=(-w 2)

echo "==> $TALLY run $JOB ${run_args[*]} $*"
"$TALLY" run "$JOB" "${run_args[@]}" "$@"

# The ledger's name, as the file sink derives it: rows.ndjson -> rows.late.ndjson.
base="${output##*/}"
stem="${base%.*}"
late="${output%"$base"}${stem:-$base}.late.ndjson"
echo
echo "==> summary of $output"

summary_jq() {
    jq -rs '
        map(select(.status != "partial")) as $settled
        | ($settled | group_by([.key_type, .key, .granularity, .window_start]) | map(max_by(.version))) as $latest
        | ($latest | map(select(.key_type == "ad" and .granularity == "1h"))) as $hours
        | "rows: \($settled | map(select(.status == "final")) | length) final, \($settled | map(select(.status == "restated")) | length) restated, \(length - ($settled | length)) partial",
          ( if ($hours | length) == 0 then "no 1h ad rows"
            else
              ($hours | group_by(.window_start) | map({start: .[0].window_start, clicks: (map(.clicks) | add), ads: .}) | max_by(.clicks)) as $busiest
              | "busiest 1h window: \($busiest.start / 1000 | todate), \($busiest.clicks) clicks on \($busiest.ads | length) ads; top 5 ads:",
                ($busiest.ads | sort_by(-.clicks) | .[:5][] | "  \(.key)\t\(.clicks) clicks\t\(.distinct_users) users\t(\(.status) v\(.version))")
            end )
    ' "$output"
}

summary_python() {
    python3 - "$output" <<'PY'
import json, sys, time
from collections import defaultdict
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
settled = [r for r in rows if r["status"] != "partial"]
latest = {}
for r in settled:
    k = (r["key_type"], r["key"], r["granularity"], r["window_start"])
    if k not in latest or r["version"] > latest[k]["version"]:
        latest[k] = r
final = sum(r["status"] == "final" for r in settled)
print(f"rows: {final} final, {len(settled) - final} restated, {len(rows) - len(settled)} partial")
hours = defaultdict(list)
for r in latest.values():
    if r["key_type"] == "ad" and r["granularity"] == "1h":
        hours[r["window_start"]].append(r)
if not hours:
    print("no 1h ad rows")
    sys.exit()
start, ads = max(hours.items(), key=lambda kv: sum(r["clicks"] for r in kv[1]))
when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1000))
print(f"busiest 1h window: {when}, {sum(r['clicks'] for r in ads)} clicks on {len(ads)} ads; top 5 ads:")
for r in sorted(ads, key=lambda r: -r["clicks"])[:5]:
    print(f"  {r['key']}\t{r['clicks']} clicks\t{r['distinct_users']} users\t({r['status']} v{r['version']})")
PY
}

summary_grep() {
    echo "rows: $(grep -c '"status":"final"' "$output" || true) final," \
        "$(grep -c '"status":"restated"' "$output" || true) restated," \
        "$(grep -c '"status":"partial"' "$output" || true) partial"
    echo "(install jq or python3 for the top ads)"
}

if [ ! -f "$output" ]; then
    echo "no rows file at $output (a job with a memory sink writes none)"
elif command -v jq >/dev/null; then
    summary_jq
elif command -v python3 >/dev/null; then
    summary_python
else
    summary_grep
fi
if [ -f "$late" ]; then
    echo "late ledger: $late, $(wc -l <"$late") entries"
fi
