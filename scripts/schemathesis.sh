#!/usr/bin/env bash
# Tests the HTTP API of `tally up` against its own OpenAPI document: starts
# target/release/tally up on a free loopback port with a scratch data
# directory (clicks unsigned, reads with an operator API key, which
# schemathesis sends; its ignored_auth check then also asks without it and
# expects 401), checks that the document it serves is valid OpenAPI 3
# (openapi-spec-validator), then runs schemathesis on every operation in it
# with every check, generated requests within and outside the schemas. Any
# failure fails the script; tally is stopped however it ends.
#
# Usage: scripts/schemathesis.sh [--max-examples N] [--seed S]
#   --max-examples  test cases per operation and phase (default 200: about
#                   40 s on 2 cores)
#   --seed          schemathesis's random seed (default: a fresh one, printed)
#
# Build first (cargo build --release). schemathesis and
# openapi-spec-validator come from PyPI into .cache/schemathesis-venv
# (git-ignored), once. Ingest POSTs write clicks into the scratch data
# directory, which is removed at the end; tally's output is shown on
# failure.
#
# One check is left out: positive_data_acceptance (a request the schemas
# allow must get a 2xx). Whether a request is valid also depends on what an
# OpenAPI schema cannot say: the server's clock (a click's timestamp within
# 7 days before and 5 minutes after it), two parameters together (`from`
# before `to`, a range of at most one day), and the calendar (no
# 2026-02-30). Such requests get a 400 naming the parameter, which the other
# checks hold to the documented schemas and statuses.
set -euo pipefail

readonly SCHEMATHESIS_VERSION=4.32.5
readonly VALIDATOR_VERSION=0.9.0
readonly LISTEN_WAIT_S=30

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=schemathesis.sh
# shellcheck source=scripts/lib/cli.sh
source "$root/scripts/lib/cli.sh"

max_examples=200
seed=()
while [ $# -gt 0 ]; do
    case "$1" in
        --max-examples) positive "$1" "${2:-}"; max_examples=$2; shift 2 ;;
        --seed) positive "$1" "${2:-}"; seed=(--seed "$2"); shift 2 ;;
        -h | --help) usage ;;
        *) bad_usage "unknown argument '$1'" ;;
    esac
done

tally=$root/target/release/tally
venv=$root/.cache/schemathesis-venv
[ -x "$tally" ] || die "$tally not found: cargo build --release first"

# A venv with the pinned tools, made once.
ensure_tools() {
    [ -f "$venv/.complete-$SCHEMATHESIS_VERSION" ] && return 0
    echo "$name: installing schemathesis $SCHEMATHESIS_VERSION and openapi-spec-validator $VALIDATOR_VERSION from PyPI into $venv ..." >&2
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install -q --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$VALIDATOR_VERSION" >&2 ||
        die "pip could not install schemathesis $SCHEMATHESIS_VERSION and openapi-spec-validator $VALIDATOR_VERSION"
    touch "$venv/.complete-$SCHEMATHESIS_VERSION"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Stops tally (TERM, as an operator would: it must exit 0) and removes the
# scratch directory; shows tally's output if anything failed.
pid=""
scratch=""
stop() {
    local status=$? tally_status=0
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" || tally_status=$?
        if [ "$tally_status" -ne 0 ]; then
            echo "$name: tally up exited with $tally_status on SIGTERM" >&2
            [ "$status" -ne 0 ] || status=1
        fi
    fi
    if [ "$status" -ne 0 ] && [ -f "$scratch/up.log" ]; then
        echo "$name: tally up said:" >&2
        tail -n 50 "$scratch/up.log" >&2
    fi
    [ -z "$scratch" ] || rm -rf "$scratch"
    exit "$status"
}
trap stop EXIT

start_tally() {
    local port=$1
    printf '[auth]\nsignatures = false\n' >"$scratch/ingest.toml"
    key=$("$tally" --data-dir "$scratch/data" keys add --operator --name schemathesis 2>/dev/null) || die "tally keys add failed"
    "$tally" --data-dir "$scratch/data" up --config "$scratch/ingest.toml" --addr "127.0.0.1:$port" >"$scratch/up.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 $((LISTEN_WAIT_S * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || die "tally up exited before listening"
        sleep 0.1
    done
    die "tally up did not listen on 127.0.0.1:$port within $LISTEN_WAIT_S s"
}

ensure_tools
scratch=$(mktemp -d)
port=$(free_port)
start_tally "$port"
url=http://127.0.0.1:$port/openapi.json

"$venv/bin/python" - "$url" <<'EOF'
import json, sys, urllib.request
from openapi_spec_validator import validate
url = sys.argv[1]
with urllib.request.urlopen(url) as reply:
    validate(json.load(reply))
print(f"schemathesis.sh: {url} is valid OpenAPI 3")
EOF

# In the scratch directory, where schemathesis keeps its cache. One
# worker: the coverage phase's threads can trip over each other in
# Python's ast module ("AST constructor recursion depth mismatch").
cd "$scratch"
"$venv/bin/schemathesis" run "$url" \
    --checks all --exclude-checks positive_data_acceptance \
    --header "Authorization: Bearer $key" \
    --max-examples "$max_examples" "${seed[@]}" \
    --workers 1 --request-timeout 10 --output-truncate false
