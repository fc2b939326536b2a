#!/usr/bin/env bash
# A real schema registry on 127.0.0.1 for development and CI, no Docker: Apicurio Registry
# (in-memory storage) with its Confluent-compatible API at http://127.0.0.1:<port>/apis/ccompat/v7.
#
#   deploy/local/registry.sh start [--port P] [--dir D]   start (or reuse) a registry; prints its URL last
#   deploy/local/registry.sh stop|status|logs|url [--dir D]
#   deploy/local/registry.sh run [--port P]               foreground (for a wrapper that owns the process)
#   deploy/local/registry.sh fetch                        only download; prints the install directory
#
# Apicurio comes from Maven Central (registry/pom.xml, the "all" tar.gz) and is unpacked once into
# ${TRANSFER_BRIDGE_CACHE:-~/.cache/transfer-bridge}/apicurio-registry-<version>. Java 17+ runs it.
# Pid and log live in D (default: .state/registry/ in the repository). --port 0 picks a free port.
# Storage is in memory: a restart forgets every subject (tests and `schemas register` rebuild them).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VERSION="$(sed -n 's:.*<apicurio.version>\(.*\)</apicurio.version>.*:\1:p' "$HERE/registry/pom.xml")"
INSTALL="${TRANSFER_BRIDGE_CACHE:-$HOME/.cache/transfer-bridge}/apicurio-registry-$VERSION"
START_TIMEOUT="${REGISTRY_START_TIMEOUT:-120}"
JAVA_OPTS="${REGISTRY_JAVA_OPTS:--Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1}"
API_PATH="/apis/ccompat/v7"

cmd="${1:-}"; shift || true
PORT=8081
DIR="$REPO/.state/registry"
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
PIDFILE="$DIR/registry.pid"
PORTFILE="$DIR/registry.port"
LOG="$DIR/registry.log"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
is_running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
url_of() { echo "http://127.0.0.1:$1$API_PATH"; }
answers() {
  python3 - "$(url_of "$1")/subjects" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

fetch() {
  [ -f "$INSTALL/.complete" ] && return 0
  command -v mvn >/dev/null || { echo "mvn (Apache Maven) is needed once to download Apicurio Registry" >&2; exit 1; }
  echo "downloading Apicurio Registry $VERSION from Maven Central into $INSTALL ..." >&2
  local tmp="$INSTALL.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  mvn -B -q -f "$HERE/registry/pom.xml" dependency:unpack -Dunpack.dir="$tmp" >&2
  rm -rf "$tmp/.markers"
  touch "$tmp/.complete"
  rm -rf "$INSTALL"; mv "$tmp" "$INSTALL"   # atomic: an interrupted download is never half-used
}

java_argv() {  # fills JAVA_ARGV for port $1
  read -r -a JAVA_ARGV <<<"$JAVA_OPTS"
  JAVA_ARGV=(java "${JAVA_ARGV[@]}" -Djava.awt.headless=true
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$1"
    -jar "$INSTALL/apicurio-registry-app-$VERSION-runner.jar")
}

wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if ! is_running; then
      echo "registry exited during start-up; log tail:" >&2; tail -n 40 "$LOG" >&2 2>/dev/null || true
      return 1
    fi
    answers "$PORT" && return 0
    sleep 0.1
  done
  echo "registry not ready after ${START_TIMEOUT}s; log tail:" >&2; tail -n 40 "$LOG" >&2 2>/dev/null || true
  return 1
}

case "$cmd" in
  fetch) fetch; echo "$INSTALL" ;;
  run)
    fetch
    [ "$PORT" = 0 ] && PORT="$(free_port)"
    java_argv "$PORT"
    exec "${JAVA_ARGV[@]}" ;;
  start)
    mkdir -p "$DIR"
    if is_running; then url_of "$(cat "$PORTFILE")"; exit 0; fi
    fetch
    [ "$PORT" = 0 ] && PORT="$(free_port)"
    if answers "$PORT"; then echo "port $PORT already answers as a registry (not ours); use --port" >&2; exit 1; fi
    echo "$PORT" > "$PORTFILE"
    java_argv "$PORT"
    nohup "${JAVA_ARGV[@]}" >"$LOG" 2>&1 &
    echo $! > "$PIDFILE"
    wait_ready
    url_of "$PORT" ;;
  stop)
    is_running || { rm -f "$PIDFILE"; exit 0; }
    pid="$(cat "$PIDFILE")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PIDFILE" ;;
  status)
    if is_running; then echo "running $(url_of "$(cat "$PORTFILE")") pid $(cat "$PIDFILE")"; else echo "stopped"; exit 1; fi ;;
  url)
    is_running || { echo "not running" >&2; exit 1; }
    url_of "$(cat "$PORTFILE")" ;;
  logs) tail -n "${LINES:-80}" "$LOG" ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
