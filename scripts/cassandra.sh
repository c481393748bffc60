#!/usr/bin/env bash
# Runs Apache Cassandra 5.0 on this machine for tests and benchmarks: one
# node on 127.0.0.1, or three forming one cluster on 127.0.0.2, .3 and .4
# (Linux routes all of 127.0.0.0/8 to the loopback: no setup needed). The
# jars come from Maven Central on first use into .cache/cassandra/lib
# (git-ignored).
#
# Usage:
#   scripts/cassandra.sh start    [--nodes 1|3] [--dir DIR] [--port PORT] [--node I] [--timeout S]
#   scripts/cassandra.sh stop     [--dir DIR] [--node I]
#   scripts/cassandra.sh restart  [--dir DIR] [--node I] [--timeout S]
#   scripts/cassandra.sh status   [--dir DIR]
#   scripts/cassandra.sh cql      [--dir DIR] -e STATEMENT [-e STATEMENT...]
#   scripts/cassandra.sh nodetool [--dir DIR] [--node I] [-- ARGS...]
#   scripts/cassandra.sh fetch
#
#   start    writes a new cluster's configuration into DIR and starts it, or
#            starts the stopped nodes of the cluster already in DIR (same
#            ports, same data); waits until every node answers CQL and, with
#            three, until every running node sees the others up; prints the
#            contact points on its last line of stdout, e.g. 127.0.0.1:9042
#            or 127.0.0.2:9042,127.0.0.3:9042,127.0.0.4:9042
#   stop     TERM, then KILL after 30 s; stopping a stopped node is fine
#   restart  stop, then start on the existing data
#   status   one line per node, then the contact points; exits 0 when every
#            node runs, 1 otherwise
#   cql      runs each statement at consistency QUORUM through the Python
#            cassandra-driver (installed on first use into a venv in the
#            cache; needs python3) and prints the rows tab-separated, a
#            header line of column names first
#   nodetool Cassandra's nodetool against node I (default 0), e.g.
#            nodetool -- status
#   fetch    only fetch the jars into the cache
#
#   --nodes N    1 (default) or 3; only when DIR holds no cluster yet
#   --dir DIR    the cluster's folder: configuration, data, logs, pids
#                (default .cache/cassandra/run in the repository)
#   --port PORT  CQL port of every node (default 9042); the nodes talk to
#                each other on PORT+1 and node I takes JMX on 127.0.0.1 at
#                PORT+2+I, so clusters running at once need --port values at
#                least 5 apart; only when DIR holds no cluster yet
#   --node I     one node of the cluster only (0, 1 or 2): start restarts a
#                stopped node; stop stops it
#   --timeout S  seconds to wait for readiness (default 180)
#
# DIR/node-I/ holds the node's cassandra.yaml, logback.xml, the JVM options
# (jvm-server.options, jvm17-server.options), its data (data/, commitlog/,
# hints/, saved_caches/, cdc_raw/), its log (system.log: INFO and up;
# stdout.log: anything the JVM prints) and its pid; DIR/cluster.env the
# cluster's shape. Tokens: one per node, evenly spaced (three nodes own a
# third of the ring each); no bootstrap streaming. Keyspaces are not
# created: a test creates its own, e.g. with replication_factor 3 on three
# nodes to ride out one stopped node at QUORUM.
#
# Environment: CASSANDRA_HEAP (default 1g; young generation a quarter of
# it), CASSANDRA_CACHE (default .cache/cassandra).
set -euo pipefail

readonly CASSANDRA_VERSION=5.0.9
readonly DRIVER_VERSION=3.30.1
readonly STOP_WAIT_S=30
readonly PORT_WAIT_S=10
readonly READY_MESSAGE="Starting listening for CQL clients"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${CASSANDRA_CACHE:-$root/.cache/cassandra}
lib=$cache/lib
venv=$cache/venv
heap=${CASSANDRA_HEAP:-1g}

name=cassandra.sh
# shellcheck source=scripts/lib/jvm-service.sh
source "$root/scripts/lib/jvm-service.sh"

# --- jars and the Python driver ---------------------------------------------

# The jars, and the command-line tools' logging configuration.
ensure_jars() {
    fetch_jars "Cassandra $CASSANDRA_VERSION"
    write_tools_logback
}

write_pom() {
    cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tally.scripts</groupId>
  <artifactId>cassandra-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.cassandra</groupId><artifactId>cassandra-all</artifactId><version>$CASSANDRA_VERSION</version></dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin><groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version></plugin>
    </plugins>
  </build>
</project>
EOF
}

# Command-line tools (nodetool): warnings and errors to stderr, nothing else.
write_tools_logback() {
    local file=$cache/tools-logback.xml
    [ -f "$file" ] && return 0
    cat >"$file.$$" <<'EOF'
<configuration>
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR"/></root>
</configuration>
EOF
    mv "$file.$$" "$file"
}

# A venv with the Python driver, made once under the same lock as the jars.
ensure_driver() {
    [ -f "$venv/.complete" ] && return 0
    command -v python3 >/dev/null || die "python3 not found (cql needs it)"
    lock_cache
    if [ ! -f "$venv/.complete" ]; then
        echo "cassandra.sh: installing cassandra-driver $DRIVER_VERSION from PyPI into $venv ..." >&2
        rm -rf "$venv"
        python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
        "$venv/bin/pip" install -q --disable-pip-version-check "cassandra-driver==$DRIVER_VERSION" >&2 ||
            die "pip could not install cassandra-driver $DRIVER_VERSION"
        touch "$venv/.complete"
    fi
    unlock_cache
}

# --- the cluster's folder ---------------------------------------------------

# DIR/cluster.env: nodes=N, port=PORT. Sets those variables.
read_cluster_env() {
    local key value
    [ -f "$dir/cluster.env" ] || return 1
    while IFS='=' read -r key value; do
        case "$key" in
            nodes) nodes=$value ;;
            port) port=$value ;;
        esac
    done <"$dir/cluster.env"
    if [ -z "${nodes:-}" ] || [ -z "${port:-}" ]; then
        die "$dir/cluster.env is incomplete; remove $dir to start afresh"
    fi
}

node_dir() { echo "$dir/node-$1"; }
node_address() { if [ "$nodes" = 1 ]; then echo 127.0.0.1; else echo "127.0.0.$((2 + $1))"; fi; }
storage_port() { echo $((port + 1)); }
jmx_port() { echo $((port + 2 + $1)); }

contact_points() {
    local i out=""
    for ((i = 0; i < nodes; i++)); do
        out+="${out:+,}$(node_address "$i"):$port"
    done
    echo "$out"
}

# Evenly spaced Murmur3 tokens, one per node.
initial_token() {
    case "$nodes:$1" in
        1:0 | 3:0) echo -9223372036854775808 ;;
        3:1) echo -3074457345618258603 ;;
        3:2) echo 3074457345618258602 ;;
    esac
}

port_in_use() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Each port node I binds, as ADDRESS:PORT.
node_ports() {
    echo "$(node_address "$1"):$port"
    echo "$(node_address "$1"):$(storage_port)"
    echo "127.0.0.1:$(jmx_port "$1")"
}

# A node killed a moment ago may still hold its ports while it exits: wait
# up to PORT_WAIT_S for them.
check_ports_free() {
    local endpoint deadline=$((SECONDS + PORT_WAIT_S))
    for endpoint in $(node_ports "$1"); do
        while port_in_use "${endpoint%:*}" "${endpoint##*:}"; do
            [ "$SECONDS" -lt "$deadline" ] ||
                die "$endpoint is in use: is another Cassandra running? (--port PORT picks others)"
            sleep 0.2
        done
    done
}

write_cassandra_yaml() {
    local i=$1 ndir seeds="" j
    ndir=$(node_dir "$i")
    for ((j = 0; j < nodes; j++)); do
        seeds+="${seeds:+,}$(node_address "$j"):$(storage_port)"
    done
    cat <<EOF
# Written by scripts/cassandra.sh: node $i of $nodes.
cluster_name: tally-test
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
num_tokens: 1
initial_token: $(initial_token "$i")
auto_bootstrap: false
# A fresh 5.0 cluster: newest sstable and messaging formats only.
storage_compatibility_mode: NONE
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$seeds"
listen_address: $(node_address "$i")
rpc_address: $(node_address "$i")
storage_port: $(storage_port)
start_native_transport: true
native_transport_port: $port
commitlog_sync: periodic
commitlog_sync_period: 10000ms
data_file_directories:
  - $ndir/data
commitlog_directory: $ndir/commitlog
saved_caches_directory: $ndir/saved_caches
hints_directory: $ndir/hints
cdc_raw_directory: $ndir/cdc_raw
EOF
}

# INFO and up to node-I/system.log, nothing to the console (Cassandra's own
# logback.xml adds a DEBUG log and a console appender).
write_logback() {
    cat <<EOF
<configuration scan="false">
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.FileAppender">
    <file>$1/system.log</file>
    <append>true</append>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="SYSTEMLOG"/></root>
</configuration>
EOF
}

# The static JVM flags of conf/jvm-server.options in apache/cassandra
# (cassandra-5.0 line), without the ones meant for big production hosts
# (AlwaysPreTouch, UseNUMA, HeapDumpOnOutOfMemoryError). Heap, ports and
# paths are given on the command line.
write_jvm_server_options() {
    cat <<'EOF'
# From Cassandra 5.0's conf/jvm-server.options (written by scripts/cassandra.sh).
-ea
-da:net.openhft...
-XX:+UseThreadPriorities
-Xss256k
-XX:+UseTLAB
-XX:+ResizeTLAB
-XX:+PerfDisableSharedMem
-Djava.net.preferIPv4Stack=true
EOF
}

# conf/jvm17-server.options in apache/cassandra (cassandra-5.0 line): G1,
# and the module exports and opens Cassandra needs on Java 17 (it fails to
# start without them). nodetool takes this file too.
write_jvm17_server_options() {
    cat <<'EOF'
# From Cassandra 5.0's conf/jvm17-server.options (written by scripts/cassandra.sh).
-XX:+UseG1GC
-XX:+ParallelRefProcEnabled
-XX:MaxTenuringThreshold=1
-XX:G1HeapRegionSize=16m
-XX:G1RSetUpdatingPauseTimePercent=5
-XX:MaxGCPauseMillis=300
-XX:InitiatingHeapOccupancyPercent=70
-Djdk.attach.allowAttachSelf=true
--add-exports java.base/jdk.internal.misc=ALL-UNNAMED
--add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
--add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
--add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
--add-exports java.sql/java.sql=ALL-UNNAMED
--add-exports java.base/java.lang.ref=ALL-UNNAMED
--add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
--add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
--add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
--add-opens java.base/java.lang.module=ALL-UNNAMED
--add-opens java.base/jdk.internal.loader=ALL-UNNAMED
--add-opens java.base/jdk.internal.ref=ALL-UNNAMED
--add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
--add-opens java.base/jdk.internal.math=ALL-UNNAMED
--add-opens java.base/jdk.internal.module=ALL-UNNAMED
--add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
--add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
--add-opens java.base/sun.nio.ch=ALL-UNNAMED
--add-opens java.base/java.io=ALL-UNNAMED
--add-opens java.base/java.lang.reflect=ALL-UNNAMED
--add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
--add-opens java.base/java.lang=ALL-UNNAMED
--add-opens java.base/java.util=ALL-UNNAMED
--add-opens java.base/java.nio=ALL-UNNAMED
-Dio.netty.tryReflectionSetAccessible=true
-Dio.netty.allocator.useCacheForAllThreads=true
-Dio.netty.allocator.maxOrder=11
EOF
}

write_node_config() {
    local i=$1 ndir
    ndir=$(node_dir "$i")
    mkdir -p "$ndir"/{data,commitlog,saved_caches,hints,cdc_raw}
    write_cassandra_yaml "$i" >"$ndir/cassandra.yaml"
    write_logback "$ndir" >"$ndir/logback.xml"
    write_jvm_server_options >"$ndir/jvm-server.options"
    write_jvm17_server_options >"$ndir/jvm17-server.options"
}

# --- processes --------------------------------------------------------------

# The node's pid if it is running (and is Cassandra: pids are reused).
running_pid() { pid_running "$(node_dir "$1")/pid" 'org\.apache\.cassandra\.service\.CassandraDaemon'; }

# Where node I's log ends now: readiness is judged on what comes after.
mark_log() {
    local ndir
    ndir=$(node_dir "$1")
    if [ -f "$ndir/system.log" ]; then stat -c %s "$ndir/system.log"; else echo 0; fi >"$ndir/log-offset"
}

log_since_mark() {
    local ndir
    ndir=$(node_dir "$1")
    [ -f "$ndir/system.log" ] || return 0
    tail -c +"$(($(cat "$ndir/log-offset") + 1))" "$ndir/system.log"
}

# Starts node I in the background, in a session of its own, so that it
# outlives this script and a Ctrl-C meant for the caller. The shell writes
# its own pid, then becomes the JVM with exec: the pid recorded is Java's.
launch_node() {
    local i=$1 ndir young ring_delay=() unpinned=()
    ndir=$(node_dir "$i")
    check_ports_free "$i"
    young=$(young_generation)
    # One node has no ring to wait for.
    [ "$nodes" = 1 ] && ring_delay=(-Dcassandra.ring_delay_ms=1000)
    # Cassandra calls mlockall at start: where it may, that faults in and
    # pins the whole heap (1.5 GB RSS a node, and ~10 s with three nodes
    # starting at once on 2 cores). Without CAP_IPC_LOCK and under a small
    # memlock limit the call fails; Cassandra logs a warning and goes on.
    if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
        unpinned=(setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock)
    fi
    rm -f "$ndir/pid"
    echo "=== $(date -Is) start" >>"$ndir/stdout.log"
    # shellcheck disable=SC2016 # $$ and $@ are the inner shell's
    setsid bash -c 'ulimit -S -l 64 && echo $$ >"$1.tmp" && mv "$1.tmp" "$1" && shift && exec "$@"' _ "$ndir/pid" \
        ${unpinned[@]+"${unpinned[@]}"} java @"$ndir/jvm-server.options" @"$ndir/jvm17-server.options" \
        -Xms"$heap" -Xmx"$heap" -Xmn"$young" -XX:+ExitOnOutOfMemoryError \
        -Dcassandra.config="file://$ndir/cassandra.yaml" \
        -Dlogback.configurationFile="$ndir/logback.xml" \
        -Dcassandra.logdir="$ndir" -Dcassandra.storagedir="$ndir" \
        -Dcassandra.jmx.local.port="$(jmx_port "$i")" \
        -Dcassandra-foreground=yes \
        -Dcassandra.skip_wait_for_gossip_to_settle=0 ${ring_delay[@]+"${ring_delay[@]}"} \
        -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon \
        </dev/null >>"$ndir/stdout.log" 2>&1 &
}

# A quarter of the heap, in the heap's unit (1g -> 256m, 2048m -> 512m).
young_generation() {
    [[ "$heap" =~ ^([0-9]+)([gGmM])$ ]] || die "CASSANDRA_HEAP must look like 1g or 1536m, not '$heap'"
    local mb=${BASH_REMATCH[1]}
    case "${BASH_REMATCH[2]}" in g | G) mb=$((mb * 1024)) ;; esac
    echo "$((mb / 4))m"
}

# Waits for node I to say it listens for CQL clients.
wait_cql() {
    local i=$1 deadline=$2 ndir pid=""
    ndir=$(node_dir "$i")
    until log_since_mark "$i" | grep -q "$READY_MESSAGE"; do
        [ -z "$pid" ] && [ -f "$ndir/pid" ] && pid=$(cat "$ndir/pid")
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            show_tail "$i"
            die "node $i (pid $pid) exited during start-up"
        fi
        not_past "$deadline" "node $i" "does not answer CQL"
        sleep 0.3
    done
}

# Waits until node A has logged, since its mark, that node B is up.
wait_sees_up() {
    local a=$1 b=$2 deadline=$3 needle
    needle="/$(node_address "$b"):$(storage_port) is now UP"
    until log_since_mark "$a" | grep -qF "$needle"; do
        running_pid "$a" >/dev/null || { show_tail "$a"; die "node $a exited while waiting for node $b"; }
        not_past "$deadline" "node $a" "does not see node $b up"
        sleep 0.3
    done
}

not_past() {
    local deadline=$1 who=$2 what=$3
    [ "$SECONDS" -lt "$deadline" ] && return 0
    show_tail "${who#node }"
    die "$who $what after ${timeout}s (it is left running; scripts/cassandra.sh stop --dir $dir)"
}

show_tail() {
    local ndir
    ndir=$(node_dir "$1")
    if [ -f "$ndir/system.log" ]; then
        echo "--- node $1: last lines of $ndir/system.log" >&2
        tail -n 30 "$ndir/system.log" | cut -c1-400 >&2
    fi
    if [ -f "$ndir/stdout.log" ]; then
        echo "--- node $1: last lines of $ndir/stdout.log" >&2
        tail -n 10 "$ndir/stdout.log" >&2
    fi
}

stop_nodes() { stop_each node node_dir "$@"; }

all_nodes() { seq 0 $((nodes - 1)); }

# --- commands ---------------------------------------------------------------

cmd_start() {
    local i j pid started=() running=() targets deadline
    ensure_jars
    if read_cluster_env; then
        [ -z "$want_nodes" ] || [ "$want_nodes" = "$nodes" ] ||
            die "$dir holds a cluster of $nodes node(s), not $want_nodes; remove $dir or use another --dir"
        [ -z "$want_port" ] || [ "$want_port" = "$port" ] ||
            die "$dir holds a cluster on port $port, not $want_port; remove $dir or use another --dir"
    else
        [ -z "$node" ] || die "$dir holds no cluster yet: --node needs one started before"
        [ -z "$(compgen -G "$dir/node-*")" ] || die "$dir holds nodes but no cluster.env; remove $dir"
        nodes=${want_nodes:-1}
        port=${want_port:-9042}
        for ((i = 0; i < nodes; i++)); do check_ports_free "$i"; done
        for ((i = 0; i < nodes; i++)); do write_node_config "$i"; done
        printf 'nodes=%s\nport=%s\n' "$nodes" "$port" >"$dir/cluster.env"
        echo "cassandra.sh: wrote a cluster of $nodes node(s) in $dir" >&2
    fi
    [ -z "$node" ] || [ "$node" -lt "$nodes" ] || die "--node $node: the cluster has nodes 0..$((nodes - 1))"
    if [ -n "$node" ]; then targets=("$node"); else mapfile -t targets < <(all_nodes); fi

    local start_s=$SECONDS start_ns
    start_ns=$(date +%s%N)
    deadline=$((start_s + timeout))
    # Every log is marked before any node starts: the running nodes must
    # log the new ones coming up after this point.
    for i in $(all_nodes); do
        [ -f "$(node_dir "$i")/cassandra.yaml" ] || die "node $i in $dir has no cassandra.yaml; remove $dir"
        mark_log "$i"
    done
    for i in "${targets[@]}"; do
        if pid=$(running_pid "$i"); then
            echo "cassandra.sh: node $i already running (pid $pid)" >&2
        else
            launch_node "$i"
            started+=("$i")
        fi
    done
    for i in ${started[@]+"${started[@]}"}; do
        wait_cql "$i" "$deadline"
        echo "cassandra.sh: node $i answers CQL on $(node_address "$i"):$port (pid $(cat "$(node_dir "$i")/pid"), log $(node_dir "$i")/system.log)" >&2
    done
    for i in $(all_nodes); do
        running_pid "$i" >/dev/null && running+=("$i")
    done
    for i in ${targets[@]+"${targets[@]}"}; do
        [[ " ${running[*]} " == *" $i "* ]] && continue
        die "node $i is not running"
    done
    for i in "${running[@]}"; do
        if [[ " ${started[*]-} " != *" $i "* ]]; then
            port_in_use "$(node_address "$i")" "$port" || die "node $i runs but does not listen on $(node_address "$i"):$port"
        fi
    done
    # With three nodes, a node that answers CQL may not yet know that the
    # others are up: requests at QUORUM would fail. Wait until each pair of
    # running nodes, one of them just started, has seen each other.
    for i in "${running[@]}"; do
        for j in "${running[@]}"; do
            [ "$i" != "$j" ] || continue
            [[ " ${started[*]-} " == *" $i "* || " ${started[*]-} " == *" $j "* ]] || continue
            wait_sees_up "$i" "$j" "$deadline"
        done
    done
    if [ ${#started[@]} -gt 0 ]; then
        local ms=$((($(date +%s%N) - start_ns) / 1000000))
        printf 'cassandra.sh: ready in %d.%d s\n' $((ms / 1000)) $((ms % 1000 / 100)) >&2
    fi
    contact_points
}

cmd_stop() {
    read_cluster_env || { echo "cassandra.sh: no cluster in $dir: nothing to stop" >&2; return 0; }
    if [ -n "$node" ]; then
        [ "$node" -lt "$nodes" ] || die "--node $node: the cluster has nodes 0..$((nodes - 1))"
        stop_nodes "$node"
    else
        local every
        mapfile -t every < <(all_nodes)
        stop_nodes "${every[@]}"
    fi
}

cmd_status() {
    local i pid all=1
    read_cluster_env || { echo "no cluster in $dir"; return 1; }
    for i in $(all_nodes); do
        if pid=$(running_pid "$i"); then
            echo "node $i: running (pid $pid) on $(node_address "$i"):$port"
        else
            echo "node $i: stopped"
            all=0
        fi
    done
    contact_points
    [ "$all" = 1 ]
}

cmd_cql() {
    [ ${#statements[@]} -gt 0 ] || bad_usage "cql needs -e STATEMENT"
    read_cluster_env || die "no cluster in $dir"
    ensure_driver
    "$venv/bin/python" - "$(contact_points)" "${statements[@]}" <<'EOF'
import logging, sys
logging.basicConfig(level=logging.CRITICAL)
from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import RoundRobinPolicy

hosts = [h.rsplit(":", 1) for h in sys.argv[1].split(",")]
profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(),
                           consistency_level=ConsistencyLevel.QUORUM, request_timeout=30)
cluster = Cluster([h for h, _ in hosts], port=int(hosts[0][1]), connect_timeout=10,
                  execution_profiles={EXEC_PROFILE_DEFAULT: profile})
try:
    session = cluster.connect()
    for statement in sys.argv[2:]:
        rows = session.execute(statement)
        if rows.column_names:
            print("\t".join(rows.column_names))
            for row in rows:
                print("\t".join("null" if v is None else str(v) for v in row))
except Exception as e:
    print(f"cassandra.sh cql: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
finally:
    cluster.shutdown()
EOF
}

cmd_nodetool() {
    read_cluster_env || die "no cluster in $dir"
    local i=${node:-0}
    [ "$i" -lt "$nodes" ] || die "--node $i: the cluster has nodes 0..$((nodes - 1))"
    ensure_jars
    exec java @"$(node_dir "$i")/jvm17-server.options" -Xmx256m -XX:TieredStopAtLevel=1 \
        -Dlogback.configurationFile="$cache/tools-logback.xml" \
        -cp "$lib/*" org.apache.cassandra.tools.NodeTool -h 127.0.0.1 -p "$(jmx_port "$i")" \
        ${extra[@]+"${extra[@]}"}
}

# --- arguments --------------------------------------------------------------

[ $# -gt 0 ] || bad_usage "a command is needed"
command=$1
shift
case "$command" in
    -h | --help | help) usage 0 ;;
    start | stop | restart | status | cql | nodetool) ;;
    fetch) ensure_jars; echo "cassandra.sh: jars in $lib"; exit 0 ;;
    *) bad_usage "unknown command '$command'" ;;
esac

dir=$root/.cache/cassandra/run
want_nodes="" want_port="" node="" timeout=180
statements=() extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) want_nodes=${2:-}; shift 2 || bad_usage "--nodes needs a value"
            [[ "$want_nodes" =~ ^[13]$ ]] || bad_usage "--nodes must be 1 or 3" ;;
        --dir) [ -n "${2:-}" ] || bad_usage "--dir needs a value"; dir=$(absolute "$2"); shift 2 ;;
        --port) want_port=${2:-}; shift 2 || bad_usage "--port needs a value"; positive --port "$want_port"
            [ "$want_port" -le 65530 ] || bad_usage "--port must leave room for PORT+4" ;;
        --node) node=${2:-}; shift 2 || bad_usage "--node needs a value"
            [[ "$node" =~ ^[0-2]$ ]] || bad_usage "--node must be 0, 1 or 2" ;;
        --timeout) timeout=${2:-}; shift 2 || bad_usage "--timeout needs a value"; positive --timeout "$timeout" ;;
        -e) [ -n "${2:-}" ] || bad_usage "-e needs a statement"; statements+=("$2"); shift 2 ;;
        --) shift; extra=("$@"); break ;;
        -h | --help) usage 0 ;;
        *) bad_usage "unknown argument '$1'" ;;
    esac
done

case "$command" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart)
        read_cluster_env || die "no cluster in $dir: nothing to restart"
        cmd_stop
        cmd_start
        ;;
    status) cmd_status ;;
    cql) cmd_cql ;;
    nodetool) cmd_nodetool ;;
esac
