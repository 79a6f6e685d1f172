#!/usr/bin/env bash
# `make up`: the distributed stack on one machine. Kafka (KRaft) and PostgreSQL, then the five
# services as separate processes, logs in .plaza/logs, pids in .plaza/run. `make down` stops it.
#
# PLAZA_DATABASE_URL set: use that PostgreSQL instead of the embedded one.
# PLAZA_KAFKA_BOOTSTRAP set: use that Kafka instead of starting one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"
home="${PLAZA_HOME:-$root/.plaza}"
py="$root/.venv/bin/python"
mkdir -p "$home/logs" "$home/run"

if [ -z "${PLAZA_KAFKA_BOOTSTRAP:-}" ]; then
  PLAZA_KAFKA_DATA="$home/kafka" deploy/local/kafka.sh start
  export PLAZA_KAFKA_BOOTSTRAP="127.0.0.1:${PLAZA_KAFKA_PORT:-9092}"
fi
if [ -z "${PLAZA_DATABASE_URL:-}" ]; then
  PLAZA_DATABASE_URL="$("$root/.venv/bin/plaza" postgres start --data-dir "$home/pgdata")"
  export PLAZA_DATABASE_URL
  touch "$home/run/postgres.embedded"
fi
export PLAZA_BUS=kafka
"$root/.venv/bin/plaza" db upgrade
"$root/.venv/bin/plaza" topics create >/dev/null

# A pid file outlives its process (a kill -9, a reboot) and its number may since be another
# process's: only a process running this service's module is this service.
module_of() { if [ "$1" = relay ]; then echo plaza_router.relay; else echo "plaza_$1"; fi; }
ours() {  # ours PID NAME
  local command; command="$(ps -ww -o args= -p "$1" 2>/dev/null)" || return 1
  [[ " $command " == *" -m $(module_of "$2") "* ]]
}
start() {
  local name="$1"; shift
  local pidfile="$home/run/$name.pid"
  if [ -f "$pidfile" ] && ours "$(cat "$pidfile")" "$name"; then
    echo "$name is already running (pid $(cat "$pidfile"))"; return
  fi
  local module; module="$(module_of "$name")"
  env "$@" "$py" -m "$module" >>"$home/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  echo "started $name (pid $!, log $home/logs/$name.log)"
}
# The gateway signs staff tokens with PLAZA_JWT_SECRET; on one machine, make one once and keep it
# in PLAZA_HOME (as `make run` does). Only the gateway is given it.
jwt_secret="${PLAZA_JWT_SECRET:-}"
if [ -z "$jwt_secret" ]; then
  [ -s "$home/jwt_secret" ] || (umask 077; "$py" -c 'import secrets; print(secrets.token_urlsafe(48))' > "$home/jwt_secret")
  jwt_secret="$(cat "$home/jwt_secret")"
fi
# Every process's /metrics asks for a bearer token: made once and kept in PLAZA_HOME/metrics_token,
# which deploy/prometheus/prometheus.yml's scrapes send. A PLAZA_METRICS_TOKEN or _FILE given is
# used instead (point prometheus.yml's credentials_file at it).
if [ -z "${PLAZA_METRICS_TOKEN:-}" ] && [ -z "${PLAZA_METRICS_TOKEN_FILE:-}" ]; then
  [ -s "$home/metrics_token" ] || (umask 077; "$py" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$home/metrics_token")
  export PLAZA_METRICS_TOKEN_FILE="$home/metrics_token"
fi
port="${PLAZA_PORT:-8000}"
ingest_port="${PLAZA_INGEST_PORT:-8101}"
declare -A ports=(
  [ingest]="$ingest_port"
  [classifier]="${PLAZA_CLASSIFIER_METRICS_PORT:-9102}"
  [router]="${PLAZA_ROUTER_METRICS_PORT:-9103}"
  [relay]="${PLAZA_RELAY_METRICS_PORT:-9105}"
  [notifier]="${PLAZA_NOTIFIER_METRICS_PORT:-9104}"
  [api]="$port"
)
start ingest PLAZA_INGEST_PORT="$ingest_port"
for worker in classifier router relay notifier; do
  start "$worker" PLAZA_METRICS_PORT="${ports[$worker]}"
done
start api PLAZA_PORT="$port" PLAZA_INGEST_URL="http://127.0.0.1:$ingest_port" \
  PLAZA_JWT_SECRET="$jwt_secret"

# Up means every service answers on its port (the gateway's /healthz also reaches PostgreSQL); a
# service that died on the way (a port taken, a bad setting) is named with the end of its log.
answers() {
  "$py" - "$1" "$2" <<'PY' 2>/dev/null
import os, sys, urllib.request
token = os.environ.get("PLAZA_METRICS_TOKEN") or ""
if not token and os.environ.get("PLAZA_METRICS_TOKEN_FILE"):
    token = open(os.environ["PLAZA_METRICS_TOKEN_FILE"], encoding="utf-8").read().strip()
headers = {"Authorization": f"Bearer {token}"} if token else {}
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}{sys.argv[2]}", headers=headers)
urllib.request.urlopen(request, timeout=1)
PY
}
waiting=(ingest classifier router relay notifier api)
for _ in $(seq 1 60); do
  still=()
  for name in "${waiting[@]}"; do
    if ! kill -0 "$(cat "$home/run/$name.pid")" 2>/dev/null; then
      echo "$name stopped while starting; the end of $home/logs/$name.log:" >&2
      tail -n 5 "$home/logs/$name.log" >&2
      exit 1
    fi
    path=/metrics; [ "$name" = api ] && path=/healthz; [ "$name" = ingest ] && path=/healthz
    answers "${ports[$name]}" "$path" || still+=("$name")
  done
  waiting=("${still[@]}")
  if [ "${#waiting[@]}" -eq 0 ]; then
    echo "Plaza is up: http://127.0.0.1:$port/docs  (make down stops it)"
    # On a first start (no keys, no users), an admin key in PLAZA_HOME/admin_key, as `make run`.
    PLAZA_HOME="$home" PLAZA_PORT="$port" "$root/.venv/bin/plaza" keys first-admin
    exit 0
  fi
  sleep 0.5
done
echo "not answering within 30 s: ${waiting[*]}; see their logs in $home/logs" >&2
exit 1
