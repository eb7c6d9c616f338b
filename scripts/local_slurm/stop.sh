#!/usr/bin/env bash
# scripts/local_slurm/stop.sh [STATE_DIR] [--purge]
#
# Tear down a cluster started by start-local-slurm.sh with the same STATE_DIR:
# cancels all jobs, stops slurmd(s), slurmctld, slurmdbd and MariaDB (if any),
# kills leftover job processes, stops munged if start-local-slurm.sh started it,
# and removes the /etc/hosts entries and /etc/slurm/slurm.conf symlink it made.
# --purge also deletes STATE_DIR (job state, logs, database). Safe to run twice.
set -uo pipefail

PURGE=0; STATE_DIR=""
for a in "$@"; do
  case "$a" in
    --purge) PURGE=1 ;;
    *) STATE_DIR=$a ;;
  esac
done
STATE_DIR=${STATE_DIR:-${LOCAL_SLURM_STATE_DIR:-/tmp/local-slurm}}
log() { echo "[stop-local-slurm] $*" >&2; }
[ -d "$STATE_DIR" ] || { log "no state dir $STATE_DIR; nothing to stop"; exit 0; }
STATE_DIR=$(cd "$STATE_DIR" && pwd)
CONF=$STATE_DIR/etc/slurm.conf
export SLURM_CONF=$CONF

alive() {  # process exists and is not a zombie (PID 1 here may reap late)
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}
# pid from a pid file, only if that process is alive and its command line or environment mentions STATE_DIR
our_pid() {
  local f=$1 pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [ -n "$pid" ] && alive "$pid" || return 1
  # (slurmdbd has no -f option: it is recognised by SLURM_CONF in its environment)
  cat "/proc/$pid/cmdline" "/proc/$pid/environ" 2>/dev/null | tr '\0' '\n' | grep -q -F "$STATE_DIR" || return 1
  echo "$pid"
}
stop_pid() {  # stop_pid PID NAME : SIGTERM, wait up to 10 s, SIGKILL
  local pid=$1 name=$2
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do alive "$pid" || { log "stopped $name ($pid)"; return 0; }; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null; log "killed $name ($pid)"
}
descendants() {  # all descendant pids of $1
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done
}

# 1. cancel all jobs while the controller is still up, give them KillWait to end
if our_pid "$STATE_DIR/run/slurmctld.pid" >/dev/null; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 1 40); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi

# 2. daemons: slurmd(s), slurmctld, slurmdbd, mariadbd
for f in "$STATE_DIR"/run/slurmd-*.pid; do
  [ -e "$f" ] || continue
  pid=$(our_pid "$f") && stop_pid "$pid" "$(basename "$f" .pid)"
  rm -f "$f"
done
pid=$(our_pid "$STATE_DIR/run/slurmctld.pid") && stop_pid "$pid" slurmctld
pid=$(our_pid "$STATE_DIR/run/slurmdbd.pid") && stop_pid "$pid" slurmdbd
pid=$(our_pid "$STATE_DIR/run/mysqld.pid") && stop_pid "$pid" mariadbd
rm -f "$STATE_DIR"/run/slurmctld.pid "$STATE_DIR"/run/slurmdbd.pid

# 3. leftover slurmstepd (their cwd is inside STATE_DIR) and everything under them
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [ "$(cat "$d/comm" 2>/dev/null)" = slurmstepd ] || continue
  case "$(readlink "$d/cwd" 2>/dev/null)" in
    "$STATE_DIR"|"$STATE_DIR"/*) ;;
    *) continue ;;
  esac
  kids=$(descendants "$pid")
  log "killing leftover slurmstepd $pid and its processes: $kids"
  # shellcheck disable=SC2086
  kill -9 "$pid" $kids 2>/dev/null || true
done

# 4. munged, only if start-local-slurm.sh started it
if [ -f "$STATE_DIR/run/munged.started-by-us" ]; then
  if [ -f /run/munge/munged.pid ] && alive "$(cat /run/munge/munged.pid)"; then
    stop_pid "$(cat /run/munge/munged.pid)" munged
  fi
  rm -f "$STATE_DIR/run/munged.started-by-us"
fi

# 5. system files we touched
HOSTS_TAG="# local-slurm:$STATE_DIR"
if grep -q -F "$HOSTS_TAG" /etc/hosts 2>/dev/null; then
  tmp=$(mktemp); grep -v -F "$HOSTS_TAG" /etc/hosts >"$tmp"; cat "$tmp" >/etc/hosts; rm -f "$tmp"
fi
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
  rm -f /etc/slurm/slurm.conf
fi

if [ "$PURGE" = 1 ]; then rm -rf "$STATE_DIR"; log "removed $STATE_DIR"; fi
log "done"
exit 0
