#!/usr/bin/env bash
# Runs one Apache Kafka broker in KRaft mode (broker and controller in one JVM) on 127.0.0.1,
# alone or as one node of a cluster (PLAZA_KAFKA_VOTERS: each node started by its own call, with
# its own port, data directory and node id, and the same voters and cluster id).
#
#   deploy/local/kafka.sh start   resolve Kafka from Maven Central (cached), format storage once, start, wait
#   deploy/local/kafka.sh stop    stop the broker started from the same data directory
#   deploy/local/kafka.sh status  exit 0 when the broker answers on its port
#   deploy/local/kafka.sh classpath  resolve only, print the classpath file
#   deploy/local/kafka.sh cluster-id  print a new cluster id (for PLAZA_KAFKA_CLUSTER_ID)
#
# Settings (environment):
#   PLAZA_KAFKA_PORT        broker port                       (default 9092)
#   PLAZA_KAFKA_DATA        data, config, pid and log dir      (default ./.plaza/kafka)
#   PLAZA_CACHE_DIR         Maven repository and classpath     (default ~/.cache/plaza)
#   PLAZA_KAFKA_HEAP        JVM heap                           (default 512m)
#   PLAZA_KAFKA_JVM_OPTS    JIT and GC options                 (default C1 only, serial GC)
#   PLAZA_KAFKA_PARTITIONS  default partitions of new topics   (default 6)
#   PLAZA_KAFKA_NODE_ID     this node's id                     (default 1)
#   PLAZA_KAFKA_VOTERS      the cluster's controller quorum, id@127.0.0.1:controller-port for
#                           every node (a node's controller port is its port + 1), e.g.
#                           1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097
#                           (default empty: a single node, its own quorum)
#   PLAZA_KAFKA_CLUSTER_ID  the cluster's id, the same on every node (needed with VOTERS;
#                           `kafka.sh cluster-id` makes one)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${PLAZA_KAFKA_PORT:-9092}"
data="${PLAZA_KAFKA_DATA:-$PWD/.plaza/kafka}"
cache="${PLAZA_CACHE_DIR:-$HOME/.cache/plaza}"
heap="${PLAZA_KAFKA_HEAP:-512m}"
# A small machine's broker: C1 only (C2's compiler threads took a third of a core for minutes
# after a start, on two cores) and the serial collector (one small heap).
jvm="${PLAZA_KAFKA_JVM_OPTS:--XX:TieredStopAtLevel=1 -XX:+UseSerialGC}"
partitions="${PLAZA_KAFKA_PARTITIONS:-6}"
node_id="${PLAZA_KAFKA_NODE_ID:-1}"
voters="${PLAZA_KAFKA_VOTERS:-}"
cluster_id="${PLAZA_KAFKA_CLUSTER_ID:-}"
mkdir -p "$data" "$cache"
data="$(cd "$data" && pwd)"

die() { echo "kafka.sh: $*" >&2; exit 1; }

# The broker of this data directory: kafka.pid outlives it (a kill -9, a reboot), and its number
# may since be another process's, which `stop` must not kill.
ours() {
  local command; command="$(ps -ww -o args= -p "$1" 2>/dev/null)" || return 1
  [[ "$command " == *" kafka.Kafka $data/server.properties "* ]]
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && exec 3>&- 3<&-
}

classpath() {
  local pom="$here/kafka/pom.xml"
  local sum; sum="$(sha256sum "$pom" | cut -c1-16)"
  local cp="$cache/kafka-classpath-$sum.txt"
  if [ ! -s "$cp" ]; then
    command -v mvn >/dev/null || die "Maven (mvn) is needed to resolve Kafka from Maven Central"
    echo "kafka.sh: resolving Apache Kafka from Maven Central into $cache/m2 ..." >&2
    mvn -q -B -f "$pom" -Dmaven.repo.local="$cache/m2" \
      dependency:build-classpath -Dmdep.outputFile="$cp.tmp" >&2 \
      || die "Maven could not resolve Kafka (see above)"
    mv "$cp.tmp" "$cp"
  fi
  echo "$cp"
}

write_config() {
  local cport=$((port + 1))
  # Alone, the node is its own quorum and every internal topic has one replica. In a cluster,
  # the internal topics (the groups' committed offsets, the transactions' state) are kept like
  # Plaza's own (replication() in plaza.bus.kafka): on three nodes with min.insync.replicas=2,
  # or a consumer group whose coordinator was on a lost broker would stop with it.
  local quorum="controller.quorum.bootstrap.servers=127.0.0.1:$cport" internal=1 min_isr=1
  if [ -n "$voters" ]; then
    quorum="controller.quorum.voters=$voters"
    local nodes; nodes="$(tr ',' '\n' <<<"$voters" | grep -c @)"
    internal=$((nodes < 3 ? nodes : 3))
    [ "$internal" -ge 3 ] && min_isr=2
  fi
  cat > "$data/server.properties" <<PROPS
process.roles=broker,controller
node.id=$node_id
$quorum
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data/log
num.partitions=$partitions
offsets.topic.replication.factor=$internal
offsets.topic.num.partitions=10
share.coordinator.state.topic.replication.factor=$internal
share.coordinator.state.topic.min.isr=$min_isr
transaction.state.log.replication.factor=$internal
transaction.state.log.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=168
PROPS
}

start() {
  if port_open "$port"; then
    if [ -f "$data/kafka.pid" ] && ours "$(cat "$data/kafka.pid")"; then
      echo "kafka.sh: already running on 127.0.0.1:$port (pid $(cat "$data/kafka.pid"))" >&2; return 0
    fi
    die "port $port is taken by another process; set PLAZA_KAFKA_PORT"
  fi
  command -v java >/dev/null || die "java (17+) is needed to run Kafka"
  local cp; cp="$(cat "$(classpath)")"
  write_config
  local jvm_opts
  read -r -a jvm_opts <<<"$jvm"
  local java_opts=(-Xms128m "-Xmx$heap" "${jvm_opts[@]}"
                   -Djava.awt.headless=true "-Dlog4j2.configurationFile=$here/kafka/log4j2.yaml")
  if [ ! -f "$data/log/meta.properties" ]; then
    # Alone, the node formats itself as the quorum's only voter; in a cluster the voters are
    # in its configuration (a static quorum) and every node is formatted with the same id.
    local quorum=(--standalone)
    if [ -n "$voters" ]; then
      [ -n "$cluster_id" ] || die "PLAZA_KAFKA_VOTERS needs PLAZA_KAFKA_CLUSTER_ID (kafka.sh cluster-id)"
      quorum=()
    else
      cluster_id="$(new_cluster_id "$cp")"
    fi
    java "${java_opts[@]}" -cp "$cp" kafka.tools.StorageTool format "${quorum[@]}" \
      -t "$cluster_id" -c "$data/server.properties" >"$data/format.log" 2>&1 \
      || { cat "$data/format.log" >&2; die "formatting storage failed"; }
  fi
  nohup java "${java_opts[@]}" -cp "$cp" kafka.Kafka "$data/server.properties" \
    >"$data/kafka.log" 2>&1 < /dev/null &
  echo $! > "$data/kafka.pid"
  local pid; pid="$(cat "$data/kafka.pid")"
  for _ in $(seq 1 120); do
    if port_open "$port"; then
      echo "kafka.sh: Kafka is up on 127.0.0.1:$port (pid $pid, log $data/kafka.log)" >&2; return 0
    fi
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$data/kafka.log" >&2; die "the broker exited during start-up"; }
    sleep 0.5
  done
  tail -n 30 "$data/kafka.log" >&2
  die "the broker did not open 127.0.0.1:$port within 60 s"
}

new_cluster_id() {
  java -cp "$1" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1
}

stop() {
  [ -f "$data/kafka.pid" ] || { echo "kafka.sh: not running (no $data/kafka.pid)" >&2; return 0; }
  local pid; pid="$(cat "$data/kafka.pid")"
  if ours "$pid"; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$data/kafka.pid"
  echo "kafka.sh: stopped" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) port_open "$port" ;;
  classpath) classpath ;;
  cluster-id) new_cluster_id "$(cat "$(classpath)")" ;;
  *) die "usage: $0 start|stop|status|classpath|cluster-id" ;;
esac
