#!/usr/bin/env bash
# `make down`: stops what `make up` started (services first, then PostgreSQL and Kafka).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"
home="${PLAZA_HOME:-$root/.plaza}"
# A pid file outlives its process (a kill -9, a reboot) and its number may since be another
# process's: only a process running this service's module is this service.
module_of() { if [ "$1" = relay ]; then echo plaza_router.relay; else echo "plaza_$1"; fi; }
ours() {  # ours PID NAME
  local command; command="$(ps -ww -o args= -p "$1" 2>/dev/null)" || return 1
  [[ " $command " == *" -m $(module_of "$2") "* ]]
}

for name in api ingest classifier router relay notifier; do
  pidfile="$home/run/$name.pid"
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if ours "$pid" "$name"; then
    kill -TERM "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "stopped $name"
  fi
  rm -f "$pidfile"
done
if [ -f "$home/run/postgres.embedded" ]; then
  "$root/.venv/bin/plaza" postgres stop --data-dir "$home/pgdata"
  rm -f "$home/run/postgres.embedded"
fi
PLAZA_KAFKA_DATA="$home/kafka" deploy/local/kafka.sh stop
