#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, broker+controller in one JVM) on 127.0.0.1,
# for development, tests, the demo and benchmarks. No Docker: the jars come from Maven Central.
#
#   deploy/local/kafka.sh start   [--port P] [--dir D]   start (or reuse) the broker of D; prints 127.0.0.1:P last
#   deploy/local/kafka.sh stop    [--dir D]              SIGTERM, up to 20 s, then SIGKILL
#   deploy/local/kafka.sh kill9   [--dir D]              SIGKILL now (crash tests); data is kept
#   deploy/local/kafka.sh restart [--dir D]              stop + start on the same port with the same data
#   deploy/local/kafka.sh status  [--dir D]              "running 127.0.0.1:P pid N" (exit 0) or "stopped" (exit 3)
#   deploy/local/kafka.sh logs    [--dir D] [-n N]       last N (80) lines of D/logs/server.log
#
# D defaults to .kafka/ in the repository (gitignored). P defaults to the port D was created with,
# else 9092; --port 0 picks a free one. Data, server.properties, kafka.pid and logs/ live in D.
# Jars: resolved once with deploy/local/kafka/pom.xml into
#   ${TRANSFER_BRIDGE_CACHE:-~/.cache/transfer-bridge}/kafka-<version>/libs
# and reused without network afterwards.
# Environment: KAFKA_HEAP (512m), KAFKA_JVM_OPTS (extra JVM flags), KAFKA_START_TIMEOUT (90 s).
# Needs bash, java (17+), mvn (first run only) and python3.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
POM="$HERE/kafka/pom.xml"
LOG4J="$HERE/kafka/log4j.properties"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
CACHE="${TRANSFER_BRIDGE_CACHE:-$HOME/.cache/transfer-bridge}/kafka-$KAFKA_VERSION"
LIBS="$CACHE/libs"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT=20

die() { echo "kafka.sh: $*" >&2; exit 1; }
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

cmd="${1:-}"; [ $# -gt 0 ] && shift
PORT=""
DIR="$REPO/.kafka"
LINES_N=80
SASL_SSL_PORT=""; TLS_DIR=""; SCRAM_USERS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) [ $# -ge 2 ] || usage; PORT="$2"; shift 2 ;;
    --dir) [ $# -ge 2 ] || usage; DIR="$2"; shift 2 ;;
    -n|--lines) [ $# -ge 2 ] || usage; LINES_N="$2"; shift 2 ;;
    --sasl-ssl-port) [ $# -ge 2 ] || usage; SASL_SSL_PORT="$2"; shift 2 ;;
    --tls-dir) [ $# -ge 2 ] || usage; TLS_DIR="$2"; shift 2 ;;
    --scram-users) [ $# -ge 2 ] || usage; SCRAM_USERS="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "kafka.sh: unknown option: $1" >&2; usage ;;
  esac
done
[ -z "$PORT" ] || [[ "$PORT" =~ ^[0-9]+$ ]] || die "--port wants a number, got '$PORT'"
[ "$cmd" = start ] && mkdir -p "$DIR"
if [ -d "$DIR" ]; then DIR="$(cd "$DIR" && pwd -P)"; else case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac; fi
PIDFILE="$DIR/kafka.pid"
PORTFILE="$DIR/kafka.port"
CPORTFILE="$DIR/controller.port"
LOGDIR="$DIR/logs"
LOG="$LOGDIR/server.log"
SECUREFILE="$DIR/sasl_ssl.env"

# ---------------------------------------------------------------------------------------------- ports

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Can a listener bind this port? SO_REUSEADDR like the JVM, so TIME_WAIT leftovers of a killed
# broker do not count as busy.
port_free() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

port_open() {
  python3 -c 'import socket,sys; s=socket.socket(); s.settimeout(0.5); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))))' "$1"
}

# -------------------------------------------------------------------------------------------- process

# Is PID alive, not a zombie, and the broker of this directory? (A stale kafka.pid after a reboot
# may name an unrelated process: never signal that.)
is_our_broker() {
  local pid="$1" state args
  if [ -r "/proc/$pid/stat" ]; then
    state="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    args="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" || return 1
  else
    state="$(ps -o stat= -p "$pid" 2>/dev/null)" || return 1
    args="$(ps -ww -o args= -p "$pid" 2>/dev/null)" || return 1
  fi
  [ -n "$state" ] && [ "${state:0:1}" != Z ] || return 1
  [[ "$args" == *kafka.Kafka*"$DIR/server.properties"* ]]
}

# Prints the broker's pid and succeeds if the broker of $DIR is running.
broker_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid="$(cat "$PIDFILE" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] && is_our_broker "$pid" || return 1
  echo "$pid"
}

# For the broker this script has just spawned: is it still alive? (Its cmdline names kafka.Kafka
# only once the python3 trampoline in launch has exec'd java, so is_our_broker would be too early.)
child_alive() {
  local state
  if [ -r "/proc/$1/stat" ]; then state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
  else state="$(ps -o stat= -p "$1" 2>/dev/null)"; fi
  [ -n "$state" ] && [ "${state:0:1}" != Z ]
}

wait_gone() {  # wait_gone PID SECONDS
  local pid="$1" deadline=$((SECONDS + $2))
  while is_our_broker "$pid"; do
    [ $SECONDS -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

stop_broker() {
  local pid
  if ! pid="$(broker_pid)"; then rm -f "$PIDFILE"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
    echo "kafka.sh: broker pid $pid still running after ${STOP_TIMEOUT}s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "broker pid $pid survived SIGKILL"
  fi
  rm -f "$PIDFILE"
}

kill9_broker() {
  local pid
  if pid="$(broker_pid)"; then
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "broker pid $pid survived SIGKILL"
  fi
  rm -f "$PIDFILE"
}

# ----------------------------------------------------------------------------------------------- jars

# Resolves the broker's jars into $LIBS once. Maven writes into a fresh temp dir that is renamed
# into place only when complete, under a lock, so an interrupted or concurrent first run never
# leaves (or uses) a half-filled libs/.
resolve_jars() {
  [ -f "$LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is needed once to fetch Kafka $KAFKA_VERSION into $LIBS"
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  # flock(2) on fd 9 via python3: the lock belongs to the open file, so it outlives python3 and is
  # released when this script closes fd 9 (or dies).
  python3 -c 'import fcntl; fcntl.flock(9, fcntl.LOCK_EX)'
  if [ ! -f "$LIBS/.complete" ]; then
    echo "kafka.sh: fetching Apache Kafka $KAFKA_VERSION from Maven Central into $LIBS (once) ..." >&2
    rm -rf "$CACHE"/libs.tmp.* "$LIBS"
    local tmp; tmp="$(mktemp -d "$CACHE/libs.tmp.XXXXXX")"
    if ! mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
         -DincludeScope=runtime -DoutputDirectory="$tmp" >"$CACHE/mvn.log" 2>&1 9>&-; then
      rm -rf "$tmp"; tail -n 40 "$CACHE/mvn.log" >&2
      die "Maven could not resolve kafka_2.13:$KAFKA_VERSION (network, proxy or ~/.m2 settings?); log: $CACHE/mvn.log"
    fi
    ls "$tmp"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "kafka_2.13-$KAFKA_VERSION.jar missing after Maven ran"; }
    touch "$tmp/.complete"
    mv "$tmp" "$LIBS"
  fi
  exec 9>&-
}

# ------------------------------------------------------------------------------------------- the JVM

jvm_opts() {
  # G1 settings as in Kafka's own kafka-run-class.sh and a modest heap. C1 only
  # (TieredStopAtLevel=1): on a 2-core box it starts ~0.4 s sooner and, under aiokafka load, used
  # half the broker CPU of C2 (whose compiler threads compete with the Python clients) at equal or
  # better throughput. KAFKA_JVM_OPTS comes last and wins (e.g. -XX:TieredStopAtLevel=4).
  # shellcheck disable=SC2206
  JVM_OPTS=(-Xms256m "-Xmx${KAFKA_HEAP:-512m}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
            -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
            -XX:+ExitOnOutOfMemoryError -XX:TieredStopAtLevel=1
            -Djava.awt.headless=true "-Dkafka.logs.dir=$LOGDIR" "-Dlog4j.configuration=file:$LOG4J"
            ${KAFKA_JVM_OPTS:-})
}

write_config() {  # write_config BROKER_PORT CONTROLLER_PORT
  cat > "$DIR/server.properties" <<CONF
# Written by deploy/local/kafka.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$2
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$1,CONTROLLER://127.0.0.1:$2${SASL_SSL_PORT:+,SASL_SSL://127.0.0.1:$SASL_SSL_PORT}
advertised.listeners=PLAINTEXT://127.0.0.1:$1${SASL_SSL_PORT:+,SASL_SSL://127.0.0.1:$SASL_SSL_PORT}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT${SASL_SSL_PORT:+,SASL_SSL:SASL_SSL}
inter.broker.listener.name=PLAINTEXT
log.dirs=$DIR/data

# One node: every internal topic with replication factor 1 and min ISR 1.
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0

# After kill9 the restarted controller keeps the dead incarnation's registration until its session
# times out, refusing the new one (DUPLICATE_BROKER_REGISTRATION): 9 s by default, 3 s here.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000

# Small and quick: few threads for a 2-core box, a 16 MB (not 128 MB) log-cleaner buffer in a
# 512 MB heap, parallel log recovery after kill9.
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=2
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
CONF
  if [ -n "$SASL_SSL_PORT" ]; then sasl_ssl_config >> "$DIR/server.properties"; chmod 600 "$DIR/server.properties"; fi
}

# Cluster ids are Kafka Uuids: 16 random bytes, URL-safe base64 without padding, not starting
# with '-'. Made here rather than with `StorageTool random-uuid`, which costs a JVM start.
random_cluster_id() {
  python3 -c '
import base64, os
while True:
    s = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not s.startswith("-"):
        print(s)
        break'
}

format_storage() {
  [ -f "$DIR/data/meta.properties" ] && return 0
  jvm_opts
  if ! java "${JVM_OPTS[@]}" -cp "$LIBS/*" kafka.tools.StorageTool format \
       -t "$(random_cluster_id)" -c "$DIR/server.properties" --ignore-formatted \
       ${SCRAM_ARGS[@]+"${SCRAM_ARGS[@]}"} \
       >"$LOGDIR/format.log" 2>&1; then
    cat "$LOGDIR/format.log" >&2
    die "formatting $DIR/data failed"
  fi
}

file_size() { if [ -f "$1" ]; then wc -c < "$1" | tr -d ' '; else echo 0; fi; }

log_tail() {  # to stderr: the end of the broker log and of the JVM's own stdout/stderr
  echo "---- $LOG (last ${1:-60} lines)" >&2
  tail -n "${1:-60}" "$LOG" >&2 2>/dev/null || echo "(none)" >&2
  if [ -s "$LOGDIR/stdout.log" ]; then
    echo "---- $LOGDIR/stdout.log (last 20 lines)" >&2
    tail -n 20 "$LOGDIR/stdout.log" >&2
  fi
}

# Waits until the broker logged "Kafka Server started" (after the KRaft controller elected itself
# and unfenced the broker) in this run's part of the log, and the port accepts connections.
# The start line is in this run's log, or in a file log4j rolled it into at an hour boundary.
started_logged() {  # started_logged LOG_OFFSET
  tail -c +"$(($1 + 1))" "$LOG" 2>/dev/null | grep -q "Kafka Server started" && return 0
  find "$LOGDIR" -maxdepth 1 -name 'server.log.20*' -newer "$PIDFILE" -exec grep -q "Kafka Server started" {} \; -print 2>/dev/null | grep -q .
}

wait_ready() {  # wait_ready PID LOG_OFFSET
  local pid="$1" offset="$2" deadline=$((SECONDS + START_TIMEOUT)) size
  while :; do
    if ! child_alive "$pid"; then
      log_tail 60
      die "the broker exited during start-up (see above; full log: $LOG)"
    fi
    size="$(file_size "$LOG")"
    [ "$size" -ge "$offset" ] || offset=0   # the log rolled over meanwhile
    if started_logged "$offset" && port_open "$PORT"; then
      return 0
    fi
    if [ $SECONDS -ge "$deadline" ]; then
      log_tail 60
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$PIDFILE"
      die "the broker was not ready within ${START_TIMEOUT}s (KAFKA_START_TIMEOUT); killed it. Full log: $LOG"
    fi
    sleep 0.2
  done
}

launch() {
  local cport pid offset
  mkdir -p "$LOGDIR"
  sasl_ssl_load
  port_free "$PORT" || die "port $PORT on 127.0.0.1 is taken by another process (pick another with --port, or --port 0)"
  # The controller port is internal; keep it if it is still free, else take a new one. With the
  # static controller.quorum.voters of this setup the metadata log does not pin it.
  cport="$(cat "$CPORTFILE" 2>/dev/null || true)"
  if [ -z "$cport" ] || [ "$cport" = "$PORT" ] || ! port_free "$cport"; then
    cport="$(free_port)"
    while [ "$cport" = "$PORT" ]; do cport="$(free_port)"; done
  fi
  write_config "$PORT" "$cport"
  echo "$PORT" > "$PORTFILE"
  echo "$cport" > "$CPORTFILE"
  format_storage
  # This run's log starts empty: log4j rolls server.log hourly, and an offset into an earlier run's
  # file pointed past this run's start line once the new file outgrew it (start-up then timed out).
  [ ! -s "$LOG" ] || mv -f "$LOG" "$LOG.previous"
  offset=0
  jvm_opts
  # A session of its own (setsid via python3, which keeps the pid): Ctrl-C in the terminal or a
  # test runner's process group does not reach the broker; `stop` does. Nothing inherits our
  # stdout, so callers reading it see EOF as soon as this script exits.
  python3 -c 'import os, sys
try:
    os.setsid()
except OSError:
    pass
os.execvp(sys.argv[1], sys.argv[1:])' \
    java "${JVM_OPTS[@]}" -cp "$LIBS/*" kafka.Kafka "$DIR/server.properties" \
    </dev/null >>"$LOGDIR/stdout.log" 2>&1 &
  pid=$!
  disown "$pid"   # no "Killed ..." job notice from bash if it must be killed below
  echo "$pid" > "$PIDFILE"
  wait_ready "$pid" "$offset"
  [ -z "$SASL_SSL_PORT" ] || echo "SASL_SSL 127.0.0.1:$SASL_SSL_PORT"
  echo "127.0.0.1:$PORT"
}

# ----------------------------------------------------------------------- optional SASL_SSL listener
#
#   start ... --sasl-ssl-port P --tls-dir T --scram-users F
#
# adds a SASL_SSL listener on 127.0.0.1:P (0 = a free port) next to PLAINTEXT, accepting PLAIN,
# SCRAM-SHA-256 and SCRAM-SHA-512. T holds server.keystore.p12 (PKCS12: the broker's key and
# certificate chain) and server.keystore.password; F has one "user password" per line
# ([A-Za-z0-9._~-] only), each user valid for all three mechanisms (SCRAM credentials are written
# when D is formatted, i.e. on its first start). Nothing secret ships with this script: tests make
# their own CA, keystore and users at run time. The choice is kept in D/sasl_ssl.env, so
# restart brings the listener back; start prints "SASL_SSL 127.0.0.1:P" before the bootstrap.

SCRAM_ARGS=()

sasl_ssl_setup() {  # validate the options of `start` and keep them for restarts
  [ -n "$SASL_SSL_PORT" ] || return 0
  [[ "$SASL_SSL_PORT" =~ ^[0-9]+$ ]] || die "--sasl-ssl-port wants a number, got '$SASL_SSL_PORT'"
  [ -n "$TLS_DIR" ] && [ -n "$SCRAM_USERS" ] || die "--sasl-ssl-port needs --tls-dir and --scram-users"
  TLS_DIR="$(cd "$TLS_DIR" && pwd -P)" || die "no TLS directory $TLS_DIR"
  [ -f "$TLS_DIR/server.keystore.p12" ] && [ -f "$TLS_DIR/server.keystore.password" ] \
    || die "$TLS_DIR needs server.keystore.p12 and server.keystore.password"
  [ -f "$SCRAM_USERS" ] || die "no users file $SCRAM_USERS"
  SCRAM_USERS="$(cd "$(dirname "$SCRAM_USERS")" && pwd -P)/$(basename "$SCRAM_USERS")"
  if [ "$SASL_SSL_PORT" = 0 ]; then
    SASL_SSL_PORT="$(free_port)"
    while [ "$SASL_SSL_PORT" = "$PORT" ]; do SASL_SSL_PORT="$(free_port)"; done
  fi
  printf 'SASL_SSL_PORT=%q\nTLS_DIR=%q\nSCRAM_USERS=%q\n' "$SASL_SSL_PORT" "$TLS_DIR" "$SCRAM_USERS" > "$SECUREFILE"
}

sasl_ssl_load() {  # the listener chosen at start, and the --add-scram arguments for formatting
  [ -f "$SECUREFILE" ] || return 0
  # shellcheck disable=SC1090
  . "$SECUREFILE"
  port_free "$SASL_SSL_PORT" || die "SASL_SSL port $SASL_SSL_PORT on 127.0.0.1 is taken by another process"
  local user password rest
  SCRAM_ARGS=()
  while read -r user password rest || [ -n "$user" ]; do
    case "$user" in ''|'#'*) continue ;; esac
    [[ "$user" =~ ^[A-Za-z0-9._~-]+$ && "$password" =~ ^[A-Za-z0-9._~-]+$ && -z "$rest" ]] \
      || die "$SCRAM_USERS: each line must be 'user password' from [A-Za-z0-9._~-]"
    SCRAM_ARGS+=(--add-scram "SCRAM-SHA-256=[name=$user,password=$password]"
                 --add-scram "SCRAM-SHA-512=[name=$user,password=$password]")
  done < "$SCRAM_USERS"
}

sasl_ssl_config() {  # server.properties lines of the listener (the file is then made owner-only)
  local user password rest plain="" store_password mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
  while read -r user password rest || [ -n "$user" ]; do
    case "$user" in ''|'#'*) continue ;; esac
    plain+=" user_$user=\"$password\""
  done < "$SCRAM_USERS"
  store_password="$(tr -d '\r\n' < "$TLS_DIR/server.keystore.password")"
  cat <<CONF

# SASL_SSL listener (kafka.sh --sasl-ssl-port): users from $SCRAM_USERS, keystore from $TLS_DIR.
sasl.enabled.mechanisms=$mechanisms
listener.name.sasl_ssl.sasl.enabled.mechanisms=$mechanisms
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$plain;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/server.keystore.p12
listener.name.sasl_ssl.ssl.keystore.password=$store_password
listener.name.sasl_ssl.ssl.key.password=$store_password
listener.name.sasl_ssl.ssl.client.auth=none
CONF
}

# ---------------------------------------------------------------------------------------- commands

case "$cmd" in
  start)
    stored="$(cat "$PORTFILE" 2>/dev/null || true)"
    if pid="$(broker_pid)"; then
      [ -z "$PORT" ] || [ "$PORT" = 0 ] || [ "$PORT" = "$stored" ] \
        || echo "kafka.sh: already running in $DIR on port $stored (not $PORT)" >&2
      echo "127.0.0.1:$stored"; exit 0
    fi
    command -v java >/dev/null || die "java (17+) is needed"
    resolve_jars
    if [ -z "$PORT" ] || [ "$PORT" = 0 ]; then
      if [ -n "$stored" ] && [ -f "$DIR/data/meta.properties" ]; then PORT="$stored"
      elif [ "$PORT" = 0 ]; then PORT="$(free_port)"
      else PORT=9092; fi
    fi
    sasl_ssl_setup
    launch ;;
  restart)
    [ -f "$DIR/data/meta.properties" ] && [ -f "$PORTFILE" ] || die "no broker data in $DIR (use start)"
    stop_broker
    resolve_jars
    PORT="$(cat "$PORTFILE")"
    launch ;;
  stop) stop_broker ;;
  kill9) kill9_broker ;;
  status)
    if pid="$(broker_pid)"; then echo "running 127.0.0.1:$(cat "$PORTFILE") pid $pid dir $DIR"
    else echo "stopped"; exit 3; fi ;;
  logs)
    [ -f "$LOG" ] || die "no broker log at $LOG"
    tail -n "$LINES_N" "$LOG" ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
