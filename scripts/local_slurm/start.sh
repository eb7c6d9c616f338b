#!/usr/bin/env bash
# scripts/local_slurm/start.sh [STATE_DIR]   (the team's local-slurm tool, kept in the project so CI can start a cluster)
#
# Bring up a real, single-machine Slurm cluster (Debian 12 / Slurm 22.05 from apt)
# with N "nodes" on this host, for integration tests. Idempotent: re-running it
# while the cluster is up leaves it up (it restarts daemons only if the generated
# slurm.conf changed). Must run as root.
#
# Each node is a separate slurmd (Debian builds Slurm with multiple-slurmd
# support) running in its own UTS namespace, so `hostname` inside a job on node
# n2 prints "n2"; node names resolve through /etc/hosts to distinct loopback
# addresses (127.0.10.<i>). No cgroups, no systemd needed.
#
# Environment knobs (all optional):
#   LOCAL_SLURM_NODES=2            number of nodes (n1..nN)
#   LOCAL_SLURM_CPUS_PER_NODE=2    CPUs each node advertises (may exceed real cores)
#   LOCAL_SLURM_MEM_PER_NODE=<MemTotal>  RealMemory (MB) each node advertises (memory is
#                            not a consumable resource here: SelectTypeParameters=CR_CPU)
#   LOCAL_SLURM_FAKE_GPUS_PER_NODE=0  N>0 = nodes advertise Gres=gpu:N backed by dummy device
#                            nodes (clones of /dev/null) so GPU requests (--gpus-per-node,
#                            --gres=gpu:N) are schedulable; jobs get CUDA_VISIBLE_DEVICES
#   LOCAL_SLURM_PORT_BASE=6817     slurmctld port; slurmd ports are PORT_BASE+1..+N
#   LOCAL_SLURM_AUTH=munge         munge | none  (auth/none exists in 22.05)
#   LOCAL_SLURM_ACCOUNTING=0       1 = also install MariaDB + slurmdbd so sacct works
#   LOCAL_SLURM_LINK_ETC=1         1 = symlink /etc/slurm/slurm.conf to our config
#                            (only if it is absent or already a symlink)
#   LOCAL_SLURM_CRED_EXPIRE=10     AuthInfo cred_expire; also the requeue delay (s)
#   LOCAL_SLURM_START_TIMEOUT=60   seconds to wait for the nodes to come up
#
# After it returns:  export SLURM_CONF=$STATE_DIR/etc/slurm.conf
# (or `source $STATE_DIR/env.sh`). Partitions: debug (default, preemptable,
# requeue), high (preempts debug jobs), and long.
set -euo pipefail

STATE_DIR=${1:-${LOCAL_SLURM_STATE_DIR:-/tmp/local-slurm}}
NODES=${LOCAL_SLURM_NODES:-2}
CPUS=${LOCAL_SLURM_CPUS_PER_NODE:-2}
MEM=${LOCAL_SLURM_MEM_PER_NODE:-$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)}
GPUS=${LOCAL_SLURM_FAKE_GPUS_PER_NODE:-0}
PORT_BASE=${LOCAL_SLURM_PORT_BASE:-6817}
AUTH=${LOCAL_SLURM_AUTH:-munge}
ACCOUNTING=${LOCAL_SLURM_ACCOUNTING:-0}
LINK_ETC=${LOCAL_SLURM_LINK_ETC:-1}
CRED_EXPIRE=${LOCAL_SLURM_CRED_EXPIRE:-10}
START_TIMEOUT=${LOCAL_SLURM_START_TIMEOUT:-60}
DBD_PORT=$((PORT_BASE + 100))

log() { echo "[start-local-slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p "$STATE_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd)
CONF=$STATE_DIR/etc/slurm.conf
export SLURM_CONF=$CONF

# ---------------------------------------------------------------- install
need_pkgs=()
for p in slurmctld slurmd slurm-client; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need_pkgs+=("$p")
done
if [ "$AUTH" = munge ]; then
  dpkg-query -W -f='${Status}' munge 2>/dev/null | grep -q "ok installed" || need_pkgs+=(munge)
fi
if [ "$ACCOUNTING" = 1 ]; then
  for p in slurmdbd mariadb-server; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need_pkgs+=("$p")
  done
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  # policy-rc.d (if any) keeps the packages from starting system services.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >"$STATE_DIR/apt.log" 2>&1 \
    || { apt-get update -q >>"$STATE_DIR/apt.log" 2>&1 && \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >>"$STATE_DIR/apt.log" 2>&1; } \
    || { tail -20 "$STATE_DIR/apt.log" >&2; die "apt-get install failed"; }
fi

mkdir -p "$STATE_DIR"/{etc,log,run,spool/ctld,spool/dbd}
for i in $(seq 1 "$NODES"); do mkdir -p "$STATE_DIR/spool/d/n$i"; done

alive() {  # process exists and is not a zombie (PID 1 may reap late in containers)
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}
pid_alive() { [ -f "$1" ] && alive "$(cat "$1")"; }

# ---------------------------------------------------------------- munge
if [ "$AUTH" = munge ]; then
  if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || { mungekey -c -b 1024 -k /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
    # munged refuses to run as root with the package's munge-owned key; run it as 'munge'.
    runuser -u munge -- /usr/sbin/munged
    touch "$STATE_DIR/run/munged.started-by-us"
    for _ in $(seq 1 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n </dev/null | unmunge >/dev/null || die "munged did not start (see /var/log/munge/munged.log)"
    log "munged started"
  fi
  AUTH_LINES="AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=$CRED_EXPIRE"
else
  AUTH_LINES="AuthType=auth/none
CredType=cred/none
AuthInfo=cred_expire=$CRED_EXPIRE"
fi

# ---------------------------------------------------------------- /etc/hosts
# Node names must resolve (MASTER_ADDR=first node of SLURM_JOB_NODELIST).
HOSTS_TAG="# local-slurm:$STATE_DIR"
if [ "$(grep -c -F "$HOSTS_TAG" /etc/hosts || true)" != "$NODES" ]; then
  tmp=$(mktemp)
  grep -v -F "$HOSTS_TAG" /etc/hosts >"$tmp" || true
  for i in $(seq 1 "$NODES"); do echo "127.0.10.$i n$i $HOSTS_TAG" >>"$tmp"; done
  # keep the inode (bind-mounted /etc/hosts in containers)
  cat "$tmp" >/etc/hosts || log "WARNING: cannot write /etc/hosts; node names n1.. will not resolve"
  rm -f "$tmp"
fi

# ---------------------------------------------------------------- slurm.conf
CTLD_HOST=$(hostname -s)
if [ "$ACCOUNTING" = 1 ]; then
  ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
else
  ACCT_LINES="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

new_conf=$(cat <<EOF
# generated by start-local-slurm.sh -- do not edit
ClusterName=local
SlurmctldHost=$CTLD_HOST(127.0.0.1)
SlurmctldPort=$PORT_BASE
SlurmUser=root
SlurmdUser=root
$AUTH_LINES
StateSaveLocation=$STATE_DIR/spool/ctld
SlurmdSpoolDir=$STATE_DIR/spool/d/%n
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd-%n.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# no cgroups: plain process tracking, no task confinement
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
$ACCT_LINES
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE_DIR/log/jobcomp.txt
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
MessageTimeout=10
SlurmdTimeout=60
EOF
)
if [ "$GPUS" -gt 0 ]; then
  new_conf+=$'\n'"GresTypes=gpu"
  # (slurmctld refuses AccountingStorageTRES=gres/gpu without slurmdbd)
  [ "$ACCOUNTING" = 1 ] && new_conf+=$'\n'"AccountingStorageTRES=gres/gpu"
  new_conf+=$'\n'"NodeName=DEFAULT CPUs=$CPUS RealMemory=$MEM Gres=gpu:$GPUS State=UNKNOWN"
else
  new_conf+=$'\n'"NodeName=DEFAULT CPUs=$CPUS RealMemory=$MEM State=UNKNOWN"
fi
for i in $(seq 1 "$NODES"); do
  new_conf+=$'\n'"NodeName=n$i NodeHostname=n$i NodeAddr=127.0.10.$i Port=$((PORT_BASE + i))"
done
new_conf+=$'\n'"PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=10"
new_conf+=$'\n'"PartitionName=high Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF"
new_conf+=$'\n'"PartitionName=long Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=10"

conf_changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
  printf '%s\n' "$new_conf" >"$CONF.tmp" && mv "$CONF.tmp" "$CONF"
  conf_changed=1
fi
printf 'export SLURM_CONF=%q\n' "$CONF" >"$STATE_DIR/env.sh"
if [ "$GPUS" -gt 0 ]; then
  # Slurm drops file-less GPUs, so give each fake GPU a device node (a clone of /dev/null).
  mkdir -p "$STATE_DIR/dev"
  for g in $(seq 0 $((GPUS - 1))); do
    [ -c "$STATE_DIR/dev/gpu$g" ] || { rm -f "$STATE_DIR/dev/gpu$g"; mknod "$STATE_DIR/dev/gpu$g" c 1 3; }
  done
  gres="NodeName=n[1-$NODES] Name=gpu File=$STATE_DIR/dev/gpu[0-$((GPUS - 1))]"
  [ -f "$STATE_DIR/etc/gres.conf" ] && [ "$(cat "$STATE_DIR/etc/gres.conf")" = "$gres" ] || { echo "$gres" >"$STATE_DIR/etc/gres.conf"; conf_changed=1; }
else
  [ -f "$STATE_DIR/etc/gres.conf" ] && { rm -f "$STATE_DIR/etc/gres.conf"; conf_changed=1; }
fi

if [ "$LINK_ETC" = 1 ]; then
  mkdir -p /etc/slurm
  if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
    ln -sfn "$CONF" /etc/slurm/slurm.conf
  else
    log "note: /etc/slurm/slurm.conf is a real file; not linking it (use SLURM_CONF=$CONF)"
  fi
fi

# ---------------------------------------------------------------- (re)start daemons
stop_pidfile() {  # stop_pidfile FILE : TERM, wait, KILL
  local f=$1 pid
  pid_alive "$f" || { rm -f "$f"; return 0; }
  pid=$(cat "$f"); kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}
if [ "$conf_changed" = 1 ]; then
  for f in "$STATE_DIR"/run/slurmd-*.pid "$STATE_DIR/run/slurmctld.pid" "$STATE_DIR/run/slurmdbd.pid"; do
    [ -e "$f" ] && { log "config changed: stopping $(basename "$f" .pid)"; stop_pidfile "$f"; }
  done
fi

if [ "$ACCOUNTING" = 1 ]; then
  DB_DIR=$STATE_DIR/mysql
  MYSOCK=$STATE_DIR/run/mysqld.sock
  if ! pid_alive "$STATE_DIR/run/mysqld.pid"; then
    if [ ! -d "$DB_DIR/mysql" ]; then
      mkdir -p "$DB_DIR"
      # a private throw-away instance, run as root (no chown dance), unix socket only
      mariadb-install-db --user=root --datadir="$DB_DIR" --auth-root-authentication-method=socket \
        --skip-test-db >"$STATE_DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed"
    fi
    mariadbd --user=root --datadir="$DB_DIR" --socket="$MYSOCK" --pid-file="$STATE_DIR/run/mysqld.pid" \
      --skip-networking --log-error="$STATE_DIR/log/mariadb.log" --innodb-buffer-pool-size=64M \
      --innodb-lock-wait-timeout=900 >/dev/null 2>&1 &
    for _ in $(seq 1 100); do mariadb --socket="$MYSOCK" -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
    mariadb --socket="$MYSOCK" -e 'select 1' >/dev/null || die "mariadbd did not start (see $STATE_DIR/log/mariadb.log)"
    log "mariadbd started"
  fi
  cat >"$STATE_DIR/etc/slurmdbd.conf.tmp" <<EOF
AuthType=auth/$AUTH
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$STATE_DIR/log/slurmdbd.log
PidFile=$STATE_DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=root
EOF
  # slurmdbd talks to MariaDB over its unix socket ($MYSQL_UNIX_PORT) as root (socket auth)
  mv "$STATE_DIR/etc/slurmdbd.conf.tmp" "$STATE_DIR/etc/slurmdbd.conf"; chmod 600 "$STATE_DIR/etc/slurmdbd.conf"
  if ! pid_alive "$STATE_DIR/run/slurmdbd.pid"; then
    # slurmdbd reads slurmdbd.conf next to $SLURM_CONF; MYSQL_UNIX_PORT points the mysql client lib at our socket
    MYSQL_UNIX_PORT=$MYSOCK SLURM_CONF=$CONF slurmdbd \
      || die "slurmdbd failed to start (see $STATE_DIR/log/slurmdbd.log)"
    for _ in $(seq 1 100); do sacctmgr -n -i show cluster >/dev/null 2>&1 && break; sleep 0.2; done
    sacctmgr -n -i show cluster >/dev/null 2>&1 || die "slurmdbd not answering (see $STATE_DIR/log/slurmdbd.log)"
    sacctmgr -n -p show cluster local | grep -q '^local|' || sacctmgr -i add cluster local >/dev/null
    log "slurmdbd started"
  fi
fi

if ! pid_alive "$STATE_DIR/run/slurmctld.pid"; then
  slurmctld -f "$CONF" || die "slurmctld failed to start (see $STATE_DIR/log/slurmctld.log)"
  log "slurmctld started"
fi
UTS_NS=1
unshare --uts true 2>/dev/null || { UTS_NS=0; log "WARNING: 'unshare --uts' not permitted; all nodes will share this host's hostname"; }
for i in $(seq 1 "$NODES"); do
  if ! pid_alive "$STATE_DIR/run/slurmd-n$i.pid"; then
    if [ "$UTS_NS" = 1 ]; then
      # own UTS namespace => `hostname` in jobs on this node is n$i
      # shellcheck disable=SC2016
      unshare --uts sh -c 'hostname "$1" && exec slurmd -f "$2" -N "$1"' sh "n$i" "$CONF"
    else
      slurmd -f "$CONF" -N "n$i"
    fi || die "slurmd n$i failed to start (see $STATE_DIR/log/slurmd-n$i.log)"
    log "slurmd n$i started"
  fi
done

# ---------------------------------------------------------------- wait until nodes are up
# (idle, or busy with jobs left from an earlier run of this script)
deadline=$((SECONDS + START_TIMEOUT))
while :; do
  states=$(sinfo -h -N -p debug -o '%N %t' 2>/dev/null | sort -u || true)
  n_up=$(printf '%s\n' "$states" | awk '$2 ~ /^(idle|alloc|mix|comp)$/' | wc -l)
  [ "$n_up" -ge "$NODES" ] && break
  pid_alive "$STATE_DIR/run/slurmctld.pid" || { tail -n 5 "$STATE_DIR/log/slurmctld.log" >&2; die "slurmctld died"; }
  # nodes left DOWN/DRAIN by an unclean earlier run: resume them
  for nd in $(printf '%s\n' "$states" | awk '$2 ~ /^(down|drain|drng|fail)/ {print $1}'); do
    scontrol update NodeName="$nd" State=RESUME 2>/dev/null || true
  done
  if [ $SECONDS -ge $deadline ]; then
    log "nodes not idle after ${START_TIMEOUT}s:"; printf '%s\n' "$states" >&2
    tail -n 20 "$STATE_DIR/log/slurmctld.log" >&2 || true
    die "cluster did not come up"
  fi
  sleep 0.5
done
log "cluster up: $NODES node(s); export SLURM_CONF=$CONF"
sinfo >&2
