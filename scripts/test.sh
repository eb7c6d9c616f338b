#!/usr/bin/env bash
# scripts/test.sh [pytest options]: the test suite as CI runs it (README, command 2), from the repository
# root with the environment active.
#   1. The Debian packages that the Slurm and report tests use (slurmctld, slurmd, slurm-client, munge,
#      slurmdbd and mariadb-server for accounting, chromium) start installing in the background, as root, while
#   2. the fast tier runs (-m "not slurm and not slow"), stopping at its first failure; then
#   3. the rest (the Slurm, training and benchmark tests), once the packages are in.
# The downloads and dpkg overlap the fast tier's computing. Each of the tests still installs what it needs
# itself when run alone (scripts/local_slurm/start.sh, tests/test_report.py).
set -uo pipefail
cd "$(dirname "$0")/.."

missing() { for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done; }
install() {  # apt-get install, and again after apt-get update if the package lists are stale
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" \
    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; }
}
log=$(mktemp) pid=
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  slurm=$(missing slurmctld slurmd slurm-client munge slurmdbd mariadb-server) browser=$(missing chromium)
  if [ -n "$slurm$browser" ]; then
    echo "scripts/test.sh: installing $(echo $slurm $browser) in the background (log: $log)" >&2
    ( { [ -z "$slurm" ] || install --no-install-recommends $slurm; } && { [ -z "$browser" ] || install $browser; } ) \
      >"$log" 2>&1 &
    pid=$!
  fi
fi

python -m pytest -x -m "not slurm and not slow" "$@"
status=$?
if [ -n "$pid" ] && ! wait "$pid"; then
  tail -20 "$log" >&2
  echo "scripts/test.sh: installing the tests' Debian packages failed (the tests try again themselves)" >&2
fi
[ "$status" = 0 ] || exit "$status"
python -m pytest -m "slurm or slow" "$@"
