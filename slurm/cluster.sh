#!/usr/bin/env bash
# Single-node SLURM cluster on this machine, for tests and local runs of the screening pipeline.
#
#   bash slurm/cluster.sh start    # install (if missing), configure, start; idempotent
#   bash slurm/cluster.sh status   # daemons + sinfo; exit 0 when the cluster is up, 3 when not
#   bash slurm/cluster.sh stop     # stop every daemon this script started; idempotent
#   bash slurm/cluster.sh purge    # stop, then delete the state directory (jobs, accounting DB)
#   source slurm/.env              # afterwards: SLURM_CONF for sbatch/sinfo/sacct/submitit
#
# Runs as root without systemd: munged, MariaDB (127.0.0.1 only), slurmdbd, slurmctld, slurmd,
# all with their configuration, sockets, logs, PID files and databases under $QECAT_SLURM_DIR.
# Nothing under /etc is changed; the Debian packages are installed when missing.
#
# Settings (environment):
#   QECAT_SLURM_DIR       state directory            (default /var/tmp/qecat-slurm)
#   QECAT_SLURM_ENV_FILE  env file written by start  (default slurm/.env next to this script)
#   QECAT_SLURM_GPUS      fake GPUs (GRES gpu) on the node, 0 for none (default 1)
#   QECAT_SLURM_CLUSTER   ClusterName                (default qecat)
#   QECAT_SLURM_PORT_BASE slurmctld port; slurmd, slurmdbd, MariaDB use +1, +2, +3 (default 6817)
#   QECAT_SLURM_TIMEOUT   seconds to wait for each daemon / the idle node (default 60)
#   QECAT_SLURM_NO_INSTALL=1  never run apt-get (fail if a package is missing)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${QECAT_SLURM_DIR:-/var/tmp/qecat-slurm}"
ENV_FILE="${QECAT_SLURM_ENV_FILE:-$HERE/.env}"
GPUS="${QECAT_SLURM_GPUS:-1}"
CLUSTER="${QECAT_SLURM_CLUSTER:-qecat}"
PORT_BASE="${QECAT_SLURM_PORT_BASE:-6817}"
TIMEOUT="${QECAT_SLURM_TIMEOUT:-60}"
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)

ETC="$STATE/etc"
RUN="$STATE/run"
LOG="$STATE/log"
MUNGE_SOCK="$RUN/munge/munge.socket.2"
DB_SOCK="$RUN/mysqld.sock"
NODE="$(hostname -s)"
export SLURM_CONF="$ETC/slurm.conf"

say() { echo "cluster.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# processes: "<name> <pidfile> <expected /proc/PID/comm>"
DAEMONS=(
  "munged $RUN/munged.pid munged"
  "mariadb $RUN/mysqld.pid mariadbd"
  "slurmdbd $RUN/slurmdbd.pid slurmdbd"
  "slurmctld $RUN/slurmctld.pid slurmctld"
  "slurmd $RUN/slurmd.pid slurmd"
)

pid_of() {  # name -> prints the PID when that daemon (ours) is alive
  local entry name pidfile comm pid
  for entry in "${DAEMONS[@]}"; do
    read -r name pidfile comm <<<"$entry"
    [[ $name == "$1" ]] || continue
    [[ -s $pidfile ]] || return 1
    pid="$(tr -dc 0-9 <"$pidfile")"
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ "$(cat "/proc/$pid/comm")" == "$comm"* ]] || return 1
    echo "$pid"
    return 0
  done
  return 1
}
running() { pid_of "$1" >/dev/null; }

wait_for() {  # description, then a command; polls until it succeeds or TIMEOUT passes
  local what="$1" t0=$SECONDS
  shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - t0 >= TIMEOUT)); then
      die "timed out after ${TIMEOUT}s waiting for $what (logs: $LOG)"
    fi
    sleep 0.3
  done
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (daemons run as root, packages come from apt)"
}

# ---------------------------------------------------------------------------------------------
install_packages() {
  local missing=() p installed
  installed="$(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null | grep ' install ok installed$' || true)"
  for p in "${PACKAGES[@]}"; do
    grep -q "^$p " <<<"$installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ ${QECAT_SLURM_NO_INSTALL:-0} == 1 ]] && die "missing packages: ${missing[*]} (QECAT_SLURM_NO_INSTALL=1)"
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get"
  say "installing ${missing[*]} (apt-get)"
  # Keep the packages' init scripts from starting system-wide munge/mariadb daemons.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  local rc=0
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } \
    >"$STATE/apt.log" 2>&1 || rc=$?
  ((made_policy)) && rm -f "$policy"
  ((rc == 0)) || { tail -20 "$STATE/apt.log" >&2; die "apt-get failed (see $STATE/apt.log)"; }
}

# ---------------------------------------------------------------------------------------------
write_if_changed() {  # path mode: stdin -> path, only when the content differs
  local path="$1" mode="$2" tmp
  tmp="$(mktemp "$path.XXXX")"
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [[ -f $path ]] && cmp -s "$tmp" "$path"; then rm -f "$tmp"; else mv -f "$tmp" "$path"; fi
}

configure() {
  mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/spool/ctld" "$STATE/spool/d" "$STATE/munge" "$STATE/dev"
  chmod 755 "$STATE" "$RUN" "$LOG"
  mkdir -p "$(dirname "$MUNGE_SOCK")"
  chmod 755 "$(dirname "$MUNGE_SOCK")"  # munged refuses a socket in a 0700 directory
  chmod 700 "$STATE/munge"              # ... and a key in a group/world-readable one

  if [[ ! -s $STATE/munge/munge.key ]]; then
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
  fi
  chmod 400 "$STATE/munge/munge.key"

  if [[ ! -s $ETC/db.pass ]]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc A-Za-z0-9 >"$ETC/db.pass")
  fi

  # Node topology from slurmd -C; 90 % of its memory is schedulable.
  local topo cpus boards sockets cores threads mem
  topo="$(slurmd -C | head -1)"
  cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$topo")"
  boards="$(sed -n 's/.*Boards=\([0-9]*\).*/\1/p' <<<"$topo")"
  sockets="$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$topo")"
  cores="$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$topo")"
  threads="$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$topo")"
  mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$topo")"
  [[ -n $cpus && -n $mem ]] || die "cannot parse 'slurmd -C': $topo"
  mem=$((mem * 9 / 10))

  # Fake GPU: a count-only GPU GRES is dropped by slurmd, a device file works. A /dev/null clone
  # (char 1:3) is harmless when opened; jobs asking for a GPU get CUDA_VISIBLE_DEVICES.
  local gres_node="" gres_types="" i
  : >"$ETC/gres.conf.new"
  echo "AutoDetect=off" >>"$ETC/gres.conf.new"
  if ((GPUS > 0)); then
    for ((i = 0; i < GPUS; i++)); do
      local dev="$STATE/dev/gpu$i"
      if [[ ! -c $dev ]]; then
        rm -f "$dev"
        mknod "$dev" c 1 3 || die "mknod $dev failed; set QECAT_SLURM_GPUS=0 to run without a fake GPU"
        chmod 666 "$dev"
      fi
    done
    gres_node="Gres=gpu:$GPUS"
    gres_types="GresTypes=gpu"
    echo "NodeName=$NODE Name=gpu File=$STATE/dev/gpu[0-$((GPUS - 1))]" >>"$ETC/gres.conf.new"
  fi
  write_if_changed "$ETC/gres.conf" 644 <"$ETC/gres.conf.new"
  rm -f "$ETC/gres.conf.new"

  write_if_changed "$ETC/slurm.conf" 644 <<EOF
# Written by slurm/cluster.sh; regenerated on every start.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$MUNGE_SOCK,cred_expire=10
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: linuxproc + task/none (ConstrainDevices would block the fake GPU device)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
$gres_types
# accounting through slurmdbd (sacct; submitit reads job states with it)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCK
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
MailProg=/bin/true
# fast turn-around for tests: short kill grace, finished jobs leave slurmctld's memory quickly
KillWait=5
MinJobAge=30
OverTimeLimit=0
InactiveLimit=0
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
JobRequeue=1
MaxArraySize=1001
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem $gres_node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

  write_if_changed "$ETC/slurmdbd.conf" 600 <<EOF
# Written by slurm/cluster.sh; regenerated on every start.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$ETC/db.pass")
StorageLoc=slurm_acct_db
EOF

  write_if_changed "$ENV_FILE" 644 <<EOF
# Written by slurm/cluster.sh start: the single-node cluster under $STATE
export SLURM_CONF=$SLURM_CONF
EOF
  cp -f "$ENV_FILE" "$STATE/env"
}

# ---------------------------------------------------------------------------------------------
start_munge() {
  running munged && return 0
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  munged --force --key-file="$STATE/munge/munge.key" --socket="$MUNGE_SOCK" \
    --pid-file="$RUN/munged.pid" --log-file="$LOG/munged.log" --seed-file="$STATE/munge/munged.seed" \
    || die "munged failed to start (see $LOG/munged.log)"
  wait_for munged test -S "$MUNGE_SOCK"
}

db() { mariadb --no-defaults --socket="$DB_SOCK" -u root "$@"; }

start_mariadb() {
  local data="$STATE/mysql"
  if [[ ! -d $data/mysql ]]; then
    say "initialising MariaDB in $data"
    rm -rf "$data"
    mariadb-install-db --no-defaults --datadir="$data" --user=root --auth-root-authentication-method=socket \
      --skip-test-db >"$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $LOG/mariadb-install.log)"
  fi
  if ! running mariadb; then
    rm -f "$DB_SOCK"
    setsid mariadbd --no-defaults --user=root --datadir="$data" --socket="$DB_SOCK" --port="$DB_PORT" \
      --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$RUN/mysqld.pid" --log-error="$LOG/mariadb.log" \
      --innodb-buffer-pool-size=64M --innodb-log-file-size=32M --innodb-lock-wait-timeout=900 \
      --max-connections=50 </dev/null >/dev/null 2>&1 &
    wait_for "MariaDB" db -e "SELECT 1"
  fi
  db <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$ETC/db.pass")';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$ETC/db.pass")';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
}

start_slurmdbd() {
  if ! running slurmdbd; then
    slurmdbd || die "slurmdbd failed to start (see $LOG/slurmdbd.log)"
  fi
  wait_for "slurmdbd" sacctmgr -n -P list cluster
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
}

node_idle() { sinfo -h -n "$NODE" -o %t | grep -Eq '^(idle|mix|alloc)'; }
cluster_registered() {
  sacctmgr -n -P list cluster format=cluster,controlport | grep -qx "$CLUSTER|$CTLD_PORT"
}

start_slurm() {
  running slurmctld || slurmctld || die "slurmctld failed to start (see $LOG/slurmctld.log)"
  wait_for "slurmctld" scontrol ping
  running slurmd || slurmd -N "$NODE" || die "slurmd failed to start (see $LOG/slurmd.log)"
  # a node left DOWN/DRAIN by an earlier unclean stop comes back
  if sinfo -h -n "$NODE" -o %t | grep -Eq 'down|drain'; then
    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
  fi
  wait_for "node $NODE idle in sinfo" node_idle
  wait_for "cluster $CLUSTER registered with slurmdbd (sacctmgr)" cluster_registered
}

cmd_start() {
  need_root
  local t0=$SECONDS
  mkdir -p "$STATE"
  install_packages
  configure
  start_munge
  start_mariadb
  start_slurmdbd
  start_slurm
  say "cluster '$CLUSTER' up in $((SECONDS - t0)) s: node $NODE, partition debug, $GPUS fake GPU(s); state in $STATE"
  echo "export SLURM_CONF=$SLURM_CONF"
}

stop_group() {  # names: TERM all, wait for all, then KILL what is left after 20 s
  local name pid pids=() i
  for name in "$@"; do
    pid="$(pid_of "$name")" || continue
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid:$name")
  done
  for ((i = 0; i < 100; i++)); do
    local alive=0 p
    for p in "${pids[@]}"; do [[ -d /proc/${p%%:*} ]] && alive=1; done
    ((alive)) || return 0
    sleep 0.2
  done
  for p in "${pids[@]}"; do
    if [[ -d /proc/${p%%:*} ]]; then
      say "${p#*:} (pid ${p%%:*}) ignored SIGTERM for 20 s: SIGKILL"
      kill -KILL "${p%%:*}" 2>/dev/null || true
    fi
  done
}

cmd_stop() {
  [[ -d $STATE ]] || return 0
  # running jobs first, so that their steps do not outlive slurmd
  if running slurmctld; then
    scancel --full --quiet --state=RUNNING 2>/dev/null || true
    scancel --quiet --state=PENDING 2>/dev/null || true
  fi
  stop_group slurmd slurmctld  # slurmctld keeps unsent accounting records in its state dir
  stop_group slurmdbd
  stop_group mariadb munged
  say "stopped"
}

cmd_status() {
  local entry name _ up=0 pid
  for entry in "${DAEMONS[@]}"; do
    read -r name _ <<<"$entry"
    if pid="$(pid_of "$name")"; then
      echo "$name: running (pid $pid)"
    else
      echo "$name: stopped"
      up=3
    fi
  done
  if ((up == 0)); then
    sinfo || up=3
    node_idle || up=3
  fi
  echo "SLURM_CONF=$SLURM_CONF"
  return $up
}

cmd_purge() {
  cmd_stop
  case "$STATE" in /|/var|/var/tmp|/tmp|"") die "refusing to delete $STATE" ;; esac
  rm -rf "$STATE"
  rm -f "$ENV_FILE"
  say "deleted $STATE"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  purge) cmd_purge ;;
  *) echo "usage: $0 {start|stop|status|purge}" >&2; exit 2 ;;
esac
