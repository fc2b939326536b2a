#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft) broker on 127.0.0.1 for development and CI, no Docker.
#
#   deploy/local/kafka.sh start [--port P] [--dir D]   start (or reuse) a broker; prints host:port last
#   deploy/local/kafka.sh stop|kill9|restart|status|logs [--dir D]
#
# The broker's jars come from Maven Central (kafka/pom.xml) and are cached in
# ${TRANSFER_BRIDGE_CACHE:-~/.cache/transfer-bridge}/kafka-<version>/libs after the first run.
# Data and logs live in D (default: .kafka/ in the repository). --port 0 picks a free port.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")"
CACHE="${TRANSFER_BRIDGE_CACHE:-$HOME/.cache/transfer-bridge}/kafka-$KAFKA_VERSION"
LIBS="$CACHE/libs"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"

cmd="${1:-}"; shift || true
PORT=9092
DIR="$REPO/.kafka"
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
PIDFILE="$DIR/kafka.pid"
PORTFILE="$DIR/kafka.port"
LOGDIR="$DIR/logs"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
is_running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
port_open() { python3 -c 'import socket,sys; s=socket.socket(); s.settimeout(0.5); sys.exit(s.connect_ex(("127.0.0.1",int(sys.argv[1]))))' "$1"; }

resolve_jars() {
  [ -f "$LIBS/.complete" ] && return 0
  echo "resolving Apache Kafka $KAFKA_VERSION from Maven Central into $LIBS ..." >&2
  local tmp="$CACHE/libs.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  mvn -B -q -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >&2
  touch "$tmp/.complete"
  rm -rf "$LIBS"; mv "$tmp" "$LIBS"   # atomic: an interrupted download is never half-used
}

write_config() {
  local controller_port; controller_port="$(free_port)"
  cat > "$DIR/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DIR/data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
num.network.threads=2
num.io.threads=4
CONF
  echo "$PORT" > "$PORTFILE"
}

java_cmd() {
  # shellcheck disable=SC2086
  java -Xms256m -Xmx${KAFKA_HEAP:-768m} -XX:+UseG1GC -XX:TieredStopAtLevel=1 \
       -Djava.awt.headless=true -Dkafka.logs.dir="$LOGDIR" \
       -Dlog4j.configuration="file:$HERE/kafka/log4j.properties" \
       -cp "$LIBS/*" "$@"
}

wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if ! is_running; then
      echo "kafka exited during start-up; log tail:" >&2; tail -n 60 "$LOGDIR/server.log" "$LOGDIR/stdout.log" >&2 2>/dev/null || true
      return 1
    fi
    if port_open "$PORT" && grep -q "Kafka Server started" "$LOGDIR/server.log" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "kafka not ready after ${START_TIMEOUT}s; log tail:" >&2; tail -n 60 "$LOGDIR/server.log" >&2 2>/dev/null || true
  return 1
}

launch() {
  mkdir -p "$LOGDIR"
  : > "$LOGDIR/server.log"
  nohup bash -c "exec java -Xms256m -Xmx${KAFKA_HEAP:-768m} -XX:+UseG1GC -XX:TieredStopAtLevel=1 \
       -Djava.awt.headless=true -Dkafka.logs.dir='$LOGDIR' \
       -Dlog4j.configuration='file:$HERE/kafka/log4j.properties' \
       -cp '$LIBS/*' kafka.Kafka '$DIR/server.properties'" >>"$LOGDIR/stdout.log" 2>&1 &
  echo $! > "$PIDFILE"
  wait_ready
  echo "127.0.0.1:$PORT"
}

stop_broker() {
  local signal="$1"
  is_running || { rm -f "$PIDFILE"; return 0; }
  local pid; pid="$(cat "$PIDFILE")"
  kill "-$signal" "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
  rm -f "$PIDFILE"
}

case "$cmd" in
  start)
    if is_running; then echo "127.0.0.1:$(cat "$PORTFILE")"; exit 0; fi
    resolve_jars
    [ "$PORT" = 0 ] && PORT="$(free_port)"
    if [ ! -f "$DIR/data/meta.properties" ]; then
      write_config
      java_cmd kafka.tools.StorageTool format -t "$(java_cmd kafka.tools.StorageTool random-uuid)" \
        -c "$DIR/server.properties" --ignore-formatted >"$DIR/format.log" 2>&1 \
        || { cat "$DIR/format.log" >&2; exit 1; }
    else
      PORT="$(cat "$PORTFILE")"
    fi
    launch ;;
  restart)
    stop_broker TERM
    [ -f "$PORTFILE" ] || { echo "no broker was ever started in $DIR" >&2; exit 1; }
    PORT="$(cat "$PORTFILE")"
    launch ;;
  stop) stop_broker TERM ;;
  kill9) is_running && kill -KILL "$(cat "$PIDFILE")" && sleep 0.3; rm -f "$PIDFILE" ;;
  status)
    if is_running; then echo "running 127.0.0.1:$(cat "$PORTFILE") pid $(cat "$PIDFILE")"; else echo "stopped"; exit 1; fi ;;
  logs) tail -n "${LINES:-80}" "$LOGDIR/server.log" ;;
  *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
