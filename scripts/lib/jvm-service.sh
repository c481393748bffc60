# shellcheck shell=bash disable=SC2154
# Shared by scripts/kafka.sh and scripts/cassandra.sh, which source it: a
# JVM service run from Maven Central jars cached in a git-ignored folder,
# one process per node with its pid in its folder.
#
# The sourcing script sets, before it calls anything here:
#   name   its name in messages (kafka.sh)
#   cache  the cache folder; lib: the jars' folder inside it
# and defines write_pom (the POM whose runtime dependencies are the jars)
# and running_pid I (node I's pid, when it runs).

# shellcheck source=scripts/lib/cli.sh
source "$(dirname "${BASH_SOURCE[0]}")/cli.sh"

# Holds the cache's fetch lock (fd 9) until unlock_cache: concurrent first
# uses wait for one download.
lock_cache() {
    mkdir -p "$cache"
    exec 9>"$cache/fetch.lock"
    flock 9
}
unlock_cache() {
    flock -u 9
    exec 9>&-
}

# Downloads the jars of write_pom once, naming them WHAT in messages. They
# go to a scratch folder that is renamed into place only when complete.
fetch_jars() {
    local what=$1 work
    [ -f "$lib/.complete" ] && return 0
    command -v mvn >/dev/null || die "mvn not found (needs Maven 3.6+ and a JDK 17)"
    lock_cache
    if [ ! -f "$lib/.complete" ]; then
        echo "$name: fetching $what jars from Maven Central into $lib ..." >&2
        work=$(mktemp -d "$cache/fetch.XXXXXX")
        write_pom >"$work/pom.xml"
        if ! mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies \
            -DoutputDirectory="$work/lib" -DincludeScope=runtime >"$work/mvn.log" 2>&1; then
            tail -n 30 "$work/mvn.log" >&2
            die "Maven could not fetch the $what jars (log: $work/mvn.log)"
        fi
        touch "$work/lib/.complete"
        rm -rf "$lib"
        mv "$work/lib" "$lib"
        rm -rf "$work"
    fi
    unlock_cache
}

# The pid in PIDFILE, when that process runs and its command line matches
# the regular expression CLASS (a pid reused by another program is not it).
pid_running() {
    local pidfile=$1 class=$2 pid
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$class" || return 1
    echo "$pid"
}

# TERM to every node I given, wait up to STOP_WAIT_S for all, then KILL.
# NOUN names a node in messages; DIR_OF I is node I's folder (its pid file:
# DIR/pid, removed).
stop_each() {
    local noun=$1 dir_of=$2 i pid entry pids=() deadline=$((SECONDS + STOP_WAIT_S))
    shift 2
    for i in "$@"; do
        if pid=$(running_pid "$i"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$i:$pid")
        else
            rm -f "$("$dir_of" "$i")/pid"
        fi
    done
    for entry in ${pids[@]+"${pids[@]}"}; do
        i=${entry%%:*} pid=${entry#*:}
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "$name: $noun $i (pid $pid) still running after ${STOP_WAIT_S}s: KILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        fi
        rm -f "$("$dir_of" "$i")/pid"
        echo "$name: $noun $i (pid $pid) stopped" >&2
    done
}
