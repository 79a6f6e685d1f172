#!/usr/bin/env bash
# axe-core for the web console's accessibility tests (tests/integration/test_console.py), from the
# npm registry, pinned by the package-lock.json beside this file (npm ci), into a cache directory
# named after the lock's hash: a changed lock installs anew, an unchanged one is a no-op.
#
#   tests/console/axe/install.sh   install if needed, then print the path of axe.min.js
#
# It goes in $PLAZA_CACHE_DIR/console-axe (PLAZA_CACHE_DIR defaults to ~/.cache/plaza, as for
# Kafka's classpath and the Bluesky peer).
#
# Exit code 3: npm is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PLAZA_CACHE_DIR:-$HOME/.cache/plaza}/console-axe"
sum="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -c1-16)"
home="$cache/axe-$sum"
script="$home/node_modules/axe-core/axe.min.js"

if [ ! -f "$home/.installed" ]; then
  command -v npm >/dev/null || { echo "install.sh: npm is needed to install axe-core" >&2; exit 3; }
  mkdir -p "$cache"
  exec 9>"$cache/.install.lock"
  flock 9   # two test sessions installing at once: the second waits, then finds it done
  if [ ! -f "$home/.installed" ]; then
    tmp="$home.tmp.$$"
    rm -rf "$tmp"; mkdir -p "$tmp"
    cp "$here/package.json" "$here/package-lock.json" "$tmp/"
    # a half install (killed, out of disk) never looks finished
    (cd "$tmp" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2) \
      || { rm -rf "$tmp"; echo "install.sh: npm ci of axe-core failed (see above)" >&2; exit 1; }
    touch "$tmp/.installed"
    rm -rf "$home"; mv "$tmp" "$home"
  fi
fi
[ -f "$script" ] || { echo "install.sh: $script is missing from the install" >&2; exit 1; }
echo "$script"
