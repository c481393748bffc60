#!/usr/bin/env bash
# Runs Apache Kafka 4.4 (KRaft, no ZooKeeper) on 127.0.0.1 for tests and
# benchmarks: one broker, or three forming one cluster. The jars come from
# Maven Central on first use into .cache/kafka/lib (git-ignored).
#
# Usage:
#   scripts/kafka.sh start   [--brokers 1|3] [--dir DIR] [--port BASE] [--broker I] [--timeout S]
#   scripts/kafka.sh stop    [--dir DIR] [--broker I]
#   scripts/kafka.sh restart [--dir DIR] [--broker I] [--timeout S]
#   scripts/kafka.sh status  [--dir DIR]
#   scripts/kafka.sh produce [--dir DIR] --topic T [--bootstrap B] [-- ConsoleProducer flags...]
#   scripts/kafka.sh tool    [--dir DIR] CLASS [ARGS...]
#   scripts/kafka.sh fetch
#
#   start    formats a new cluster in DIR and starts it, or starts the stopped
#            brokers of the cluster already in DIR (same ports, same data);
#            waits until every broker is ready and prints the bootstrap
#            servers on its last line of stdout, e.g. 127.0.0.1:9092 or
#            127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292
#   stop     TERM, then KILL after 20 s; stopping a stopped broker is fine
#   restart  stop, then start on the existing data
#   status   one line per broker, then the bootstrap servers; exits 0 when
#            every broker runs, 1 otherwise
#   produce  Kafka's ConsoleProducer: stdin lines KEY<TAB>VALUE to topic T
#            (flags after -- go to it, e.g. -- --command-property linger.ms=5);
#            it retries for up to 2 min, riding out a broker's restart
#   fetch    only fetch the jars into the cache (the test command does it
#            before the tests, which each start a broker of their own)
#   tool     any main class from the Kafka jars, e.g.
#            tool org.apache.kafka.tools.TopicCommand --bootstrap-server B --list
#
#   --brokers N  1 (default) or 3; only when DIR holds no cluster yet
#   --dir DIR    the cluster's folder: config, data, logs, pids
#                (default .cache/kafka/run in the repository)
#   --port BASE  broker I listens on BASE + 100*I, its controller on
#                BASE + 1 + 100*I (default 9092: 9092/9093, 9192/9193, 9292/9293);
#                only when DIR holds no cluster yet
#   --broker I   one broker of the cluster only (0, 1 or 2): start restarts a
#                formatted, stopped broker; stop stops it
#   --timeout S  seconds to wait for readiness (default 120)
#
# DIR/broker-I/ holds server.properties, the data (data/), the broker's own
# log (server.log: INFO and up; stdout.log: anything the JVM prints) and its
# pid; DIR/cluster.env the cluster's shape. Single broker: controller and
# broker in one process, the quorum bootstrapped with --standalone. Three:
# each is broker and controller, a static quorum of the three. Replication:
# 1 broker: internal topics RF 1, min ISR 1; 3 brokers: RF 3, min ISR 2,
# default.replication.factor 3, and a killed broker is fenced and leaves the
# ISRs within ~6 s (broker.session.timeout.ms 6000, replica.lag.time.max.ms
# 10000). Topics get 8 partitions by default and are not created
# automatically.
#
# Environment: KAFKA_HEAP (default 512m), KAFKA_CACHE (default .cache/kafka).
set -euo pipefail

readonly KAFKA_VERSION=4.4.0
readonly LOG4J_VERSION=2.25.5
readonly STOP_WAIT_S=20
readonly STARTED_MESSAGE="Kafka Server started"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KAFKA_CACHE:-$root/.cache/kafka}
lib=$cache/lib
heap=${KAFKA_HEAP:-512m}

name=kafka.sh
# shellcheck source=scripts/lib/jvm-service.sh
source "$root/scripts/lib/jvm-service.sh"

# --- jars -------------------------------------------------------------------

# The jars, and the command-line tools' logging configuration.
ensure_jars() {
    fetch_jars "Kafka $KAFKA_VERSION"
    write_tools_log4j
}

write_pom() {
    cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tally.scripts</groupId>
  <artifactId>kafka-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-clients</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- Kafka logs through slf4j 1.7: without a binding it logs nothing. -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin><groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version></plugin>
    </plugins>
  </build>
</project>
EOF
}

# Runs a Kafka main class in the foreground; warnings and errors to stderr.
run_tool() {
    ensure_jars
    exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$cache/tools-log4j2.properties" \
        -cp "$lib/*" "$@"
}

write_tools_log4j() {
    local file=$cache/tools-log4j2.properties
    [ -f "$file" ] && return 0
    cat >"$file.$$" <<'EOF'
# Kafka's command-line tools: warnings and errors to stderr, nothing else.
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
EOF
    mv "$file.$$" "$file"
}

# --- the cluster's folder ---------------------------------------------------

# DIR/cluster.env: brokers=N, port=BASE, cluster_id=ID. Sets those variables.
read_cluster_env() {
    local key value
    [ -f "$dir/cluster.env" ] || return 1
    while IFS='=' read -r key value; do
        case "$key" in
            brokers) brokers=$value ;;
            port) port=$value ;;
            cluster_id) cluster_id=$value ;;
        esac
    done <"$dir/cluster.env"
    if [ -z "${brokers:-}" ] || [ -z "${port:-}" ] || [ -z "${cluster_id:-}" ]; then
        die "$dir/cluster.env is incomplete; remove $dir to start afresh"
    fi
}

broker_port() { echo $((port + 100 * $1)); }
controller_port() { echo $((port + 1 + 100 * $1)); }
broker_dir() { echo "$dir/broker-$1"; }

bootstrap_servers() {
    local i out=""
    for ((i = 0; i < brokers; i++)); do
        out+="${out:+,}127.0.0.1:$(broker_port "$i")"
    done
    echo "$out"
}

# A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not
# starting with '-' (Kafka's own rule, so that it never reads as a flag).
new_cluster_id() {
    local id
    while :; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
        [ "${id:0:1}" != "-" ] && { echo "$id"; return; }
    done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_server_properties() {
    local i=$1 rf min_isr quorum j failover=""
    if [ "$brokers" = 1 ]; then
        rf=1 min_isr=1
        quorum="controller.quorum.bootstrap.servers=127.0.0.1:$(controller_port 0)"
    else
        rf=3 min_isr=2
        quorum="controller.quorum.voters="
        for ((j = 0; j < brokers; j++)); do
            quorum+="$([ "$j" = 0 ] || echo ,)$j@127.0.0.1:$(controller_port "$j")"
        done
        # A killed broker leaves the ISRs after ~6 s instead of 9-30 s, so
        # that acks=all writes stall briefly when a test kills one.
        failover=$'broker.heartbeat.interval.ms=1000\nbroker.session.timeout.ms=6000\nreplica.lag.time.max.ms=10000'
    fi
    cat <<EOF
# Written by scripts/kafka.sh: broker $i of $brokers.
process.roles=broker,controller
node.id=$i
$quorum
listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i"),CONTROLLER://127.0.0.1:$(controller_port "$i")
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$(broker_dir "$i")/data
num.partitions=8
auto.create.topics.enable=false
default.replication.factor=$rf
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
$failover
EOF
}

write_broker_log4j() {
    cat >"$dir/log4j2.properties" <<'EOF'
# Brokers started by scripts/kafka.sh: INFO and up to broker-I/server.log.
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
# Per-request and per-partition chatter.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF
}

# Formats every broker of a new cluster (in parallel: each is a JVM start).
format_cluster() {
    local i pids=() standalone=()
    [ "$brokers" = 1 ] && standalone=(--standalone)
    for ((i = 0; i < brokers; i++)); do
        local bdir
        bdir=$(broker_dir "$i")
        mkdir -p "$bdir"
        write_server_properties "$i" >"$bdir/server.properties"
        java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$cache/tools-log4j2.properties" \
            -cp "$lib/*" kafka.tools.StorageTool format -t "$cluster_id" \
            -c "$bdir/server.properties" ${standalone[@]+"${standalone[@]}"} \
            >"$bdir/format.log" 2>&1 &
        pids+=($!)
    done
    for ((i = 0; i < brokers; i++)); do
        wait "${pids[i]}" || { cat "$(broker_dir "$i")/format.log" >&2; die "formatting broker $i failed"; }
    done
}

# --- processes --------------------------------------------------------------

# The broker's pid if it is running (and is a Kafka broker: pids are reused).
running_pid() { pid_running "$(broker_dir "$1")/pid" 'kafka\.Kafka '; }

# Starts broker I in the background, in a session of its own, so that it
# outlives this script and a Ctrl-C meant for the caller. The shell writes
# its own pid, then becomes the JVM with exec: the pid recorded is Java's.
launch_broker() {
    local i=$1 bdir p
    bdir=$(broker_dir "$i")
    for p in "$(broker_port "$i")" "$(controller_port "$i")"; do
        port_in_use "$p" && die "port $p is in use: is another Kafka running? (--port BASE picks others)"
    done
    # Readiness is the started message appearing after the current end of the log.
    if [ -f "$bdir/server.log" ]; then stat -c %s "$bdir/server.log"; else echo 0; fi >"$bdir/log-offset"
    rm -f "$bdir/pid"
    echo "=== $(date -Is) start" >>"$bdir/stdout.log"
    # shellcheck disable=SC2016 # $$ and $@ are the inner shell's
    setsid bash -c 'echo $$ >"$1.tmp" && mv "$1.tmp" "$1" && shift && exec "$@"' _ "$bdir/pid" \
        java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        -Djava.awt.headless=true -Dkafka.logs.dir="$bdir" \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -cp "$lib/*" kafka.Kafka "$bdir/server.properties" \
        </dev/null >>"$bdir/stdout.log" 2>&1 &
}

wait_ready() {
    local i=$1 deadline=$2 bdir offset pid=""
    bdir=$(broker_dir "$i")
    offset=$(cat "$bdir/log-offset")
    while :; do
        if [ -f "$bdir/server.log" ] &&
            tail -c +"$((offset + 1))" "$bdir/server.log" | grep -q "$STARTED_MESSAGE"; then
            return 0
        fi
        [ -z "$pid" ] && [ -f "$bdir/pid" ] && pid=$(cat "$bdir/pid")
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            show_tail "$i"
            die "broker $i (pid $pid) exited during start-up"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_tail "$i"
            die "broker $i not ready after ${timeout}s (it is left running; scripts/kafka.sh stop --dir $dir)"
        fi
        sleep 0.2
    done
}

show_tail() {
    local bdir
    bdir=$(broker_dir "$1")
    if [ -f "$bdir/server.log" ]; then
        echo "--- broker $1: last lines of $bdir/server.log" >&2
        tail -n 25 "$bdir/server.log" >&2
    fi
    echo "--- broker $1: last lines of $bdir/stdout.log" >&2
    tail -n 10 "$bdir/stdout.log" >&2
}

stop_brokers() { stop_each broker broker_dir "$@"; }

# --- commands ---------------------------------------------------------------

cmd_start() {
    local i pid started=() already=() deadline fresh=0
    ensure_jars
    if read_cluster_env; then
        [ -z "$want_brokers" ] || [ "$want_brokers" = "$brokers" ] ||
            die "$dir holds a cluster of $brokers broker(s), not $want_brokers; remove $dir or use another --dir"
        [ -z "$want_port" ] || [ "$want_port" = "$port" ] ||
            die "$dir holds a cluster on port $port, not $want_port; remove $dir or use another --dir"
    else
        [ -z "$broker" ] || die "$dir holds no cluster yet: --broker needs one started before"
        [ -z "$(compgen -G "$dir/broker-*")" ] || die "$dir holds brokers but no cluster.env (a failed format?); remove $dir"
        brokers=${want_brokers:-1}
        port=${want_port:-9092}
        cluster_id=$(new_cluster_id)
        fresh=1
    fi
    [ -z "$broker" ] || [ "$broker" -lt "$brokers" ] || die "--broker $broker: the cluster has brokers 0..$((brokers - 1))"
    if [ "$fresh" = 1 ]; then
        mkdir -p "$dir"
        for ((i = 0; i < brokers; i++)); do
            for p in "$(broker_port "$i")" "$(controller_port "$i")"; do
                port_in_use "$p" && die "port $p is in use: is another Kafka running? (--port BASE picks others)"
            done
        done
        write_broker_log4j
        format_cluster
        printf 'brokers=%s\nport=%s\ncluster_id=%s\n' "$brokers" "$port" "$cluster_id" >"$dir/cluster.env"
        echo "kafka.sh: formatted a cluster of $brokers broker(s) in $dir (cluster id $cluster_id)" >&2
    fi
    local targets
    if [ -n "$broker" ]; then targets=("$broker"); else mapfile -t targets < <(seq 0 $((brokers - 1))); fi
    local start_s=$SECONDS start_ns
    start_ns=$(date +%s%N)
    for i in "${targets[@]}"; do
        [ -f "$(broker_dir "$i")/data/meta.properties" ] || die "broker $i in $dir is not formatted"
        if pid=$(running_pid "$i"); then
            echo "kafka.sh: broker $i already running (pid $pid)" >&2
            already+=("$i")
            continue
        fi
        launch_broker "$i"
        started+=("$i")
    done
    deadline=$((start_s + timeout))
    for i in ${already[@]+"${already[@]}"}; do
        until port_in_use "$(broker_port "$i")"; do
            [ "$SECONDS" -lt "$deadline" ] || die "broker $i (running) does not listen on port $(broker_port "$i") after ${timeout}s"
            sleep 0.2
        done
    done
    for i in ${started[@]+"${started[@]}"}; do
        wait_ready "$i" "$deadline"
        echo "kafka.sh: broker $i ready on 127.0.0.1:$(broker_port "$i") (pid $(cat "$(broker_dir "$i")/pid"), log $(broker_dir "$i")/server.log)" >&2
    done
    if [ ${#started[@]} -gt 0 ]; then
        local ms=$((($(date +%s%N) - start_ns) / 1000000))
        printf 'kafka.sh: ready in %d.%d s\n' $((ms / 1000)) $((ms % 1000 / 100)) >&2
    fi
    bootstrap_servers
}

cmd_stop() {
    read_cluster_env || { echo "kafka.sh: no cluster in $dir: nothing to stop" >&2; return 0; }
    if [ -n "$broker" ]; then
        [ "$broker" -lt "$brokers" ] || die "--broker $broker: the cluster has brokers 0..$((brokers - 1))"
        stop_brokers "$broker"
    else
        local every
        mapfile -t every < <(seq 0 $((brokers - 1)))
        stop_brokers "${every[@]}"
    fi
}

cmd_status() {
    local i pid all=1
    read_cluster_env || { echo "no cluster in $dir"; return 1; }
    for ((i = 0; i < brokers; i++)); do
        if pid=$(running_pid "$i"); then
            echo "broker $i: running (pid $pid) on 127.0.0.1:$(broker_port "$i")"
        else
            echo "broker $i: stopped"
            all=0
        fi
    done
    bootstrap_servers
    [ "$all" = 1 ]
}

cmd_produce() {
    [ -n "$topic" ] || bad_usage "produce needs --topic T"
    if [ -z "$bootstrap" ]; then
        read_cluster_env || die "no cluster in $dir: give --bootstrap or --dir"
        bootstrap=$(bootstrap_servers)
    fi
    # The tool's own defaults (1.5 s request timeout, 3 retries) drop
    # records while a broker of three restarts; these ride it out. A flag
    # given after -- replaces its default here.
    local defaults=(--request-timeout-ms 30000 --message-send-max-retries 2147483647) own=() k
    for ((k = 0; k < ${#defaults[@]}; k += 2)); do
        [[ " ${extra[*]-} " == *" ${defaults[k]} "* ]] || own+=("${defaults[k]}" "${defaults[k + 1]}")
    done
    run_tool org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$bootstrap" --topic "$topic" \
        --reader-property parse.key=true --reader-property key.separator=$'\t' \
        ${own[@]+"${own[@]}"} ${extra[@]+"${extra[@]}"}
}

# --- arguments --------------------------------------------------------------

[ $# -gt 0 ] || bad_usage "a command is needed"
command=$1
shift
case "$command" in
    -h | --help | help) usage 0 ;;
    start | stop | restart | status | produce | tool) ;;
    fetch) ensure_jars; echo "kafka.sh: jars in $lib"; exit 0 ;;
    *) bad_usage "unknown command '$command'" ;;
esac

dir=$root/.cache/kafka/run
want_brokers="" want_port="" broker="" timeout=120 topic="" bootstrap=""
extra=()
if [ "$command" = tool ]; then
    if [ "${1:-}" = --dir ]; then dir=$(absolute "${2:?--dir needs a value}"); shift 2; fi
    [ $# -gt 0 ] || bad_usage "tool needs a main class"
    run_tool "$@"
fi
while [ $# -gt 0 ]; do
    case "$1" in
        --brokers) want_brokers=${2:-}; shift 2 || bad_usage "--brokers needs a value"
            [[ "$want_brokers" =~ ^[13]$ ]] || bad_usage "--brokers must be 1 or 3" ;;
        --dir) [ -n "${2:-}" ] || bad_usage "--dir needs a value"; dir=$(absolute "$2"); shift 2 ;;
        --port) want_port=${2:-}; shift 2 || bad_usage "--port needs a value"; positive --port "$want_port"
            [ "$want_port" -le 65000 ] || bad_usage "--port must leave room for brokers up to BASE+201" ;;
        --broker) broker=${2:-}; shift 2 || bad_usage "--broker needs a value"
            [[ "$broker" =~ ^[0-2]$ ]] || bad_usage "--broker must be 0, 1 or 2" ;;
        --timeout) timeout=${2:-}; shift 2 || bad_usage "--timeout needs a value"; positive --timeout "$timeout" ;;
        --topic) topic=${2:-}; shift 2 || bad_usage "--topic needs a value" ;;
        --bootstrap) bootstrap=${2:-}; shift 2 || bad_usage "--bootstrap needs a value" ;;
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
    produce) cmd_produce ;;
esac
