#!/usr/bin/env bash
# Runs Prometheus (Debian's `prometheus` package, installed if missing) on
# 127.0.0.1, scraping running tally processes, for tests and for trying
# tally's metrics and alert rules (deploy/prometheus/).
#
# Usage: scripts/prometheus.sh start --target HOST:PORT[,HOST:PORT...] [--dir DIR]
#                                    [--port P] [--interval S] [--timeout S]
#        scripts/prometheus.sh stop [--dir DIR]
#        scripts/prometheus.sh check
#   start        writes DIR/prometheus.yml (a job `tally` scraping the
#                targets' /metrics every S seconds, the rules of
#                deploy/prometheus/rules.yml), starts Prometheus with its data
#                in DIR/data, waits until it is ready, and prints its URL on
#                the last line
#   stop         stops the Prometheus of DIR by its pid (TERM, KILL after 20 s)
#   check        promtool check rules deploy/prometheus/rules.yml and check
#                config deploy/prometheus/prometheus.yml
#   --target     what to scrape: tally up / ingest addresses, or tally run's
#                --metrics-addr
#   --dir        Prometheus's folder (default target/prometheus)
#   --port       its HTTP port (default 29090)
#   --interval   scrape and rule evaluation interval in seconds (default 1)
#   --timeout    seconds to wait for readiness (default 60)
#
# DIR holds prometheus.yml, data/, prometheus.log and pid. Installing the
# package needs root (or sudo without a password).
set -euo pipefail

readonly STOP_WAIT_S=20

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=prometheus.sh
# shellcheck source=scripts/lib/cli.sh
source "$root/scripts/lib/cli.sh"

# Debian's prometheus package (it brings promtool).
ensure_prometheus() {
    command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
    echo "$name: prometheus not found: installing Debian's prometheus package" >&2
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    "${sudo[@]}" apt-get update >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y prometheus >&2 || die "apt-get install prometheus failed"
}

running_pid() {
    local pid
    [ -f "$dir/pid" ] || return 1
    pid=$(cat "$dir/pid")
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "prometheus .*--config.file=$dir/prometheus.yml" || return 1
    echo "$pid"
}

write_config() {
    local targets="" t
    IFS=',' read -r -a list <<<"$target"
    for t in "${list[@]}"; do targets+="${targets:+, }'$t'"; done
    cat <<EOF2
# Written by scripts/prometheus.sh.
global:
  scrape_interval: ${interval}s
  evaluation_interval: ${interval}s
rule_files:
  - $root/deploy/prometheus/rules.yml
scrape_configs:
  - job_name: tally
    static_configs:
      - targets: [$targets]
EOF2
}

cmd_start() {
    [ -n "$target" ] || bad_usage "start needs --target HOST:PORT"
    ensure_prometheus
    if pid=$(running_pid); then die "a Prometheus (pid $pid) already runs in $dir; stop it first"; fi
    mkdir -p "$dir"
    write_config >"$dir/prometheus.yml"
    promtool check config "$dir/prometheus.yml" >&2 || die "promtool rejects $dir/prometheus.yml"
    setsid prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
        --web.listen-address="127.0.0.1:$port" --log.level=warn >"$dir/prometheus.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    local deadline=$((SECONDS + timeout))
    until curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; do
        if ! running_pid >/dev/null; then
            tail -n 20 "$dir/prometheus.log" >&2
            die "Prometheus exited before it was ready (log: $dir/prometheus.log)"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "Prometheus not ready within ${timeout}s (log: $dir/prometheus.log)"
        sleep 0.2
    done
    echo "$name: ready, scraping $target every ${interval}s" >&2
    echo "http://127.0.0.1:$port"
}

cmd_stop() {
    local pid deadline=$((SECONDS + STOP_WAIT_S))
    if ! pid=$(running_pid); then
        rm -f "$dir/pid"
        echo "$name: no Prometheus runs in $dir" >&2
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid"
    echo "$name: Prometheus (pid $pid) stopped" >&2
}

cmd_check() {
    ensure_prometheus
    promtool check rules "$root/deploy/prometheus/rules.yml"
    promtool check config "$root/deploy/prometheus/prometheus.yml"
}

case "${1:-}" in -h | --help | "") usage 0 ;; esac
command=$1
shift
dir=$root/target/prometheus port=29090 interval=1 timeout=60 target=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) [ -n "${2:-}" ] || bad_usage "--dir needs a value"; dir=$(absolute "$2"); shift 2 ;;
        --port) positive --port "${2:-}"; port=$2; shift 2 ;;
        --interval) positive --interval "${2:-}"; interval=$2; shift 2 ;;
        --timeout) positive --timeout "${2:-}"; timeout=$2; shift 2 ;;
        --target) [ -n "${2:-}" ] || bad_usage "--target needs a value"; target=$2; shift 2 ;;
        -h | --help) usage 0 ;;
        *) bad_usage "unknown argument '$1'" ;;
    esac
done
case "$command" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    check) cmd_check ;;
    *) bad_usage "unknown command '$command'" ;;
esac
