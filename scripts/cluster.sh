#!/usr/bin/env bash
# Runs a tally job as a Timely cluster of N local processes and keeps it
# running: a Timely cluster is fail-stop (when one process dies, the others
# panic or hang), so when any process fails this stops the others and starts
# all N again, on fresh ports, as the next generation; they resume from the
# last committed epoch by themselves.
#
# Usage: scripts/cluster.sh JOB N W [--state DIR] [--max-restarts K] [--tally PATH]
#                           [-- EXTRA tally run ARGS...]
#   JOB              the job file, e.g. jobs/clicks.toml
#   N                processes (1..64); W: worker threads per process (-w)
#   --state DIR      the supervisor's folder (default target/cluster/JOB-STEM in
#                    the repository); it holds
#                      hostfile    127.0.0.1:PORT per process, in process order
#                      pids        the current generation's pids, one a line,
#                                  in process order
#                      generation  1, 2, ... (written after pids)
#                      pI.log      process I's stdout and stderr, every
#                                  generation appended after a header line
#   --max-restarts K restarts allowed before giving up with exit 1 (default 100)
#   --tally PATH     the tally binary (default target/release/tally in the
#                    repository)
#   EXTRA            more `tally run` arguments for every process, e.g.
#                    -- --bounded --data-dir D; {process} in them becomes the
#                    process index (-- --data-dir D/p{process})
#
# Process I runs `TALLY run JOB --processes N --process I --hostfile
# DIR/hostfile -w W EXTRA...` in the caller's working directory.
#
# Exit status: 0 when every process of a generation exited 0 (a bounded run
# finished) or when the supervisor was stopped by SIGTERM or SIGINT (it
# stops the processes first); 2 when a process exited 2 (a usage or job
# error: restarting would not help) or the arguments are wrong; 1 after
# K restarts.
#
# A process fails when it exits non-zero or is killed by a signal; the others
# are then sent SIGTERM (and SIGCONT, should one be stopped), SIGKILL after
# 10 s. When one process exits 0 and the others have not exited 60 s later,
# the generation is failed too (a peer of a finished process cannot finish).
# A hung process that does not exit (e.g. SIGSTOPped) is not detected. One
# line per event goes to stderr, e.g.
#   cluster: generation 2 started: pids 4711 4712
#   cluster: process 1 (pid 4712) killed by signal 9; restarting all
set -euo pipefail

readonly MAX_PROCESSES=64
readonly STOP_WAIT_S=10
readonly FINISH_GRACE_S=60
readonly RESTART_DELAY_S=1

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit "${1:-0}"
}
bad_usage() { echo "cluster.sh: $*" >&2; usage 2 >&2; }
event() { echo "cluster: $*" >&2; }
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

# --- arguments --------------------------------------------------------------

case "${1:-}" in -h | --help) usage 0 ;; esac
[ $# -ge 3 ] || bad_usage "JOB, N and W are required"
job=$1 processes=$2 workers=$3
shift 3
[ -f "$job" ] || bad_usage "job file '$job' not found"
{ [[ "$processes" =~ ^[1-9][0-9]*$ ]] && [ "$processes" -le "$MAX_PROCESSES" ]; } ||
    bad_usage "N must be 1..$MAX_PROCESSES, not '$processes'"
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || bad_usage "W must be a positive integer, not '$workers'"
state="" max_restarts=100 tally=$root/target/release/tally
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --state) [ -n "${2:-}" ] || bad_usage "--state needs a value"; state=$(absolute "$2"); shift 2 ;;
        --max-restarts) max_restarts=${2:-}; shift 2 || bad_usage "--max-restarts needs a value"
            [[ "$max_restarts" =~ ^[0-9]+$ ]] || bad_usage "--max-restarts must be a number, not '$max_restarts'" ;;
        --tally) [ -n "${2:-}" ] || bad_usage "--tally needs a value"; tally=$(absolute "$2"); shift 2 ;;
        --) shift; extra=("$@"); break ;;
        -h | --help) usage 0 ;;
        *) bad_usage "unknown argument '$1' (tally run arguments go after --)" ;;
    esac
done
[ -x "$tally" ] || { echo "cluster.sh: $tally is not an executable (cargo build --release --bins, or --tally PATH)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "cluster.sh: python3 not found (it picks free ports)" >&2; exit 2; }
stem=$(basename "$job")
state=${state:-$root/target/cluster/${stem%.toml}}
mkdir -p "$state"

# --- one generation ---------------------------------------------------------

# N free loopback ports, below the ephemeral range (32768-60999 on Linux) so
# that a process's outgoing connections cannot take one before its owner
# binds it.
free_ports() {
    python3 - "$1" <<'EOF'
import random, socket, sys
ports = []
while len(ports) < int(sys.argv[1]):
    port = random.randint(20000, 32000)
    if port in ports:
        continue
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    ports.append(port)
print(" ".join(map(str, ports)))
EOF
}

# Writes FILE atomically from stdin, so that a reader never sees half of it.
write_file() { cat >"$1.tmp" && mv "$1.tmp" "$1"; }

pids=()
start_generation() {
    local i ports
    read -r -a ports <<<"$(free_ports "$processes")"
    printf '127.0.0.1:%s\n' "${ports[@]}" | write_file "$state/hostfile"
    pids=()
    for ((i = 0; i < processes; i++)); do
        local own=("${extra[@]//\{process\}/$i}")
        # The subshell writes the header, then becomes tally: $! is tally's pid.
        (
            echo "=== cluster generation $generation, process $i of $processes, pid $BASHPID, $(date -Is)"
            exec "$tally" run "$job" --processes "$processes" --process "$i" \
                --hostfile "$state/hostfile" -w "$workers" ${own[@]+"${own[@]}"}
        ) >>"$state/p$i.log" 2>&1 &
        pids+=($!)
    done
    printf '%s\n' "${pids[@]}" | write_file "$state/pids"
    echo "$generation" | write_file "$state/generation"
    event "generation $generation started: pids ${pids[*]} (ports ${ports[*]}, logs $state/p*.log)"
}

how() {
    if [ "$1" -gt 128 ]; then echo "killed by signal $(($1 - 128))"; else echo "exited with status $1"; fi
}

# TERM (and CONT, for a stopped one) to every live process of the
# generation, KILL after STOP_WAIT_S, and reap them all.
stop_generation() {
    local i pid deadline=$((SECONDS + STOP_WAIT_S))
    for pid in "${pids[@]}"; do
        [ "$pid" = 0 ] && continue
        kill -TERM "$pid" 2>/dev/null && kill -CONT "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < processes; i++)); do
        pid=${pids[i]}
        [ "$pid" = 0 ] && continue
        while kill -0 "$pid" 2>/dev/null && ! exited "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.1
        done
        if ! exited "$pid"; then
            event "process $i (pid $pid) still running ${STOP_WAIT_S}s after SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            kill -CONT "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
        pids[i]=0
    done
}

# True once PID has exited (a zombie waiting to be reaped counts).
exited() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    [ "$(awk '{ print $1 }' <<<"${stat##*)}")" = Z ]
}

# Waits for the generation to end. Returns 0 when every process exited 0,
# 2 when one exited 2, 1 when one failed otherwise, 3 when the supervisor
# was asked to stop; the processes still running are stopped in all but the
# first case.
watch_generation() {
    local i pid status live=$processes finished_at=""
    while [ "$live" -gt 0 ]; do
        wait_any
        pid=$waited_pid status=$waited_status
        if [ "$stop_requested" = 1 ]; then
            event "stop requested: stopping generation $generation"
            stop_generation
            return 3
        fi
        if [ -z "$pid" ]; then
            if [ -n "$finished_at" ] && [ $((SECONDS - finished_at)) -ge "$FINISH_GRACE_S" ]; then
                event "a process finished ${FINISH_GRACE_S}s ago and the others have not; restarting all"
                stop_generation
                return 1
            fi
            continue
        fi
        for ((i = 0; i < processes; i++)); do [ "${pids[i]}" = "$pid" ] && break; done
        pids[i]=0
        live=$((live - 1))
        if [ "$status" = 0 ]; then
            event "process $i (pid $pid) exited 0"
            finished_at=${finished_at:-$SECONDS}
            continue
        fi
        if [ "$status" = 2 ]; then
            event "process $i (pid $pid) exited with status 2 (usage or job error, see $state/p$i.log); stopping all"
            stop_generation
            return 2
        fi
        event "process $i (pid $pid) $(how "$status"); restarting all"
        stop_generation
        return 1
    done
    return 0
}

# Waits for any live process to exit, for at most 1 s (so that signals and
# the finish grace are looked at). Sets waited_pid (empty after a timeout or
# a signal) and waited_status.
wait_any() {
    local live=() p timer
    for p in "${pids[@]}"; do [ "$p" = 0 ] || live+=("$p"); done
    waited_pid="" waited_status=0
    [ ${#live[@]} -gt 0 ] || return 0
    # A 1 s timer among the children wakes `wait -n` up; it is not in pids.
    sleep 1 &
    timer=$!
    # (stderr: not the shell's "Killed" notice; the event says it)
    wait -n -p waited_pid "${live[@]}" "$timer" 2>/dev/null || waited_status=$?
    # A signal interrupts the wait and leaves waited_pid unset.
    waited_pid=${waited_pid:-}
    if [ "$waited_pid" = "$timer" ]; then
        waited_pid=""
    else
        kill "$timer" 2>/dev/null || true
    fi
    wait "$timer" 2>/dev/null || true
}

# --- the supervisor ---------------------------------------------------------

stop_requested=0
trap 'stop_requested=1' TERM INT
# Should this script fail, its processes do not outlive it.
trap 'status=$?; [ ${#pids[@]} -eq 0 ] || stop_generation; exit $status' EXIT

generation=0
restarts=0
while :; do
    generation=$((generation + 1))
    start_generation
    status=0
    watch_generation || status=$?
    case "$status" in
        0) event "generation $generation finished: every process exited 0"; exit 0 ;;
        2) exit 2 ;;
        3) event "stopped"; exit 0 ;;
    esac
    if [ "$restarts" -ge "$max_restarts" ]; then
        event "giving up after $restarts restart(s) (--max-restarts $max_restarts)"
        exit 1
    fi
    restarts=$((restarts + 1))
    sleep "$RESTART_DELAY_S" &
    wait $! || true
    if [ "$stop_requested" = 1 ]; then event "stopped"; exit 0; fi
done
