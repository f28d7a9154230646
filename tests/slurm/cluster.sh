#!/usr/bin/env bash
# A real 3-node Slurm 22.05 cluster on one machine, for running the sbatch templates in tests and CI.
#
#   tests/slurm/cluster.sh up|down|status
#
# Each node is its own network namespace (n1, n2, n3) with a veth pair on one bridge and an address in a
# private /24 that exists only on that bridge, so every node has its own hostname and IP (which Ray and
# `hostname --ip-address` need). slurmctld runs in the root namespace. Recipe and measured facts:
# /work/shared/notes/slurm-on-one-machine.md.
#
# Settings (environment):
#   SLURMCI_BASE   state, config, logs, pid files   (default /tmp/slurmci)
#   SLURMCI_NET    first three octets of the /24     (default 10.250.0; the bridge is .1, node k is .1k)
#   SLURMCI_CPUS   CPUs each node claims             (default 2; config_overrides lets it exceed the real cores)
#   SLURMCI_NODES  number of nodes                   (default 3)
#
# After `up`, use the cluster with:  export SLURM_CONF=$SLURMCI_BASE/slurm.conf
# Exit codes: 0 ok, 77 cannot run here (reason on stderr; test harnesses treat it as "skip"), 1 failure.
# `down` ends only processes named in this cluster's pid files, never by name.
set -uo pipefail

BASE=${SLURMCI_BASE:-/tmp/slurmci}
NET=${SLURMCI_NET:-10.250.0}
CPUS=${SLURMCI_CPUS:-2}
NNODES=${SLURMCI_NODES:-3}
BRIDGE=${SLURMCI_BRIDGE:-slurmci0}
CONF=$BASE/slurm.conf
NODES=()
for ((k = 1; k <= NNODES; k++)); do NODES+=("n$k"); done

say() { printf 'cluster.sh: %s\n' "$*" >&2; }
skip() { say "SKIP: $*"; exit 77; }
die() { say "ERROR: $*"; exit 1; }

# A pid file names a live process of ours only if the process still runs the expected program
# (pid files outlive their processes, and PIDs get reused).
pid_alive() {  # pidfile expected-comm
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}

check_host() {
  [ "$(id -u)" = 0 ] || skip "needs root (network namespaces, slurmd as root)"
  command -v ip >/dev/null || skip "no 'ip' command (iproute2)"
  ip netns list >/dev/null 2>&1 || skip "'ip netns' is not available here"
  command -v nsenter >/dev/null && command -v unshare >/dev/null || skip "needs nsenter and unshare (util-linux)"
}

install_packages() {
  local pkgs=(slurmctld slurmd slurm-client munge)
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return 0
  command -v apt-get >/dev/null || skip "Slurm is not installed and there is no apt-get to install it"
  say "installing ${pkgs[*]} (apt-get, log in $BASE/apt.log)"
  apt_get() { DEBIAN_FRONTEND=noninteractive apt-get "$@" >>"$BASE/apt.log" 2>&1; }
  if ! apt_get install -y --no-install-recommends "${pkgs[@]}"; then
    apt_get update   # a fresh image often has no package lists yet
    apt_get install -y --no-install-recommends "${pkgs[@]}" || skip "could not install ${pkgs[*]} (see $BASE/apt.log)"
  fi
}

write_config() {
  local k
  mkdir -p "$BASE/state" "$BASE/log" "$BASE/spool"
  {
    printf '127.0.0.1 localhost\n%s.1 slurmci-ctl\n' "$NET"
    for k in "${!NODES[@]}"; do printf '%s.1%d %s\n' "$NET" "$((k + 1))" "${NODES[$k]}"; done
  } >"$BASE/hosts"
  cat >"$CONF" <<EOF
# Written by tests/slurm/cluster.sh: a throw-away test cluster, not a template for real clusters.
ClusterName=slurmci
SlurmctldHost=localhost($NET.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No cgroups inside the namespaces: track processes by parent PID, no task binding, no accounting.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
# Heterogeneous jobs are started only by the backfill scheduler: look every second, not every 30; and the
# main scheduler every 2 s, not 60, so a requeued job starts as soon as it may.
SchedulerParameters=bf_interval=1,sched_interval=2
# A requeued job may start again cred_expire + 1 s after the requeue (default 120 s; real clusters keep that).
AuthInfo=cred_expire=10
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# Nodes may claim more CPUs than the machine has (36-core "nodes" on a laptop).
SlurmdParameters=config_overrides
InactiveLimit=0
KillWait=5
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/%n
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd-%n.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd-%n.log
SlurmctldPort=6817
SlurmdPort=6818
# Every node claims one "GPU" (a count, no device file) so templates that ask for --gres=gpu:1 run unchanged.
GresTypes=gpu
EOF
  printf 'Name=gpu File=/dev/null\n' >"$BASE/gres.conf"
  for k in "${!NODES[@]}"; do
    printf 'NodeName=%s NodeHostname=%s NodeAddr=%s.1%d CPUs=%d RealMemory=2000 Gres=gpu:1 State=UNKNOWN\n' \
      "${NODES[$k]}" "${NODES[$k]}" "$NET" "$((k + 1))" "$CPUS" >>"$CONF"
  done
  printf 'PartitionName=debug Nodes=%s Default=YES MaxTime=INFINITE State=UP\n' \
    "$(IFS=,; echo "${NODES[*]}")" >>"$CONF"
}

start_munge() {
  # Reuse a running munged (it may serve other things on this machine); else start one and remember its PID.
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged || die "munged did not start"
  cp /run/munge/munged.pid "$BASE/munged.pid"
  munge -n | unmunge >/dev/null 2>&1 || die "munged started but munge -n | unmunge fails"
}

setup_network() {
  local k ns
  ip link show "$BRIDGE" >/dev/null 2>&1 || {
    ip link add "$BRIDGE" type bridge && ip addr add "$NET.1/24" dev "$BRIDGE" && ip link set "$BRIDGE" up
  } || die "could not create bridge $BRIDGE"
  for k in "${!NODES[@]}"; do
    ns=${NODES[$k]}
    [ -e "/run/netns/$ns" ] && continue
    ip netns add "$ns" || skip "'ip netns add $ns' failed (no permission for network namespaces?)"
    ip link add "veth-$ns" type veth peer name eth0 netns "$ns" \
      && ip link set "veth-$ns" master "$BRIDGE" up \
      && ip -n "$ns" addr add "$NET.1$((k + 1))/24" dev eth0 \
      && ip -n "$ns" link set eth0 up \
      && ip -n "$ns" link set lo up \
      || die "could not wire namespace $ns"
  done
}

start_daemons() {
  local ns
  pid_alive "$BASE/slurmctld.pid" slurmctld || {
    rm -f "$BASE/slurmctld.pid"
    slurmctld -f "$CONF" -c || die "slurmctld did not start (see $BASE/log/slurmctld.log)"
  }
  for ns in "${NODES[@]}"; do
    pid_alive "$BASE/slurmd-$ns.pid" slurmd && continue
    rm -f "$BASE/slurmd-$ns.pid"
    # Not `ip netns exec`: it remounts /sys, which hides /sys/fs/cgroup and slurmd then refuses to start.
    # The private mount namespace gives the node its own /etc/hosts without touching the machine's.
    nsenter --net="/run/netns/$ns" unshare --uts --mount sh -c \
      "mount --bind '$BASE/hosts' /etc/hosts && hostname '$ns' && SLURM_CONF='$CONF' exec slurmd -f '$CONF' -N '$ns'" \
      || die "slurmd -N $ns did not start (see $BASE/log/slurmd-$ns.log)"
  done
}

wait_idle() {
  local t0=$SECONDS up
  export SLURM_CONF=$CONF
  while ((SECONDS - t0 < 30)); do
    up=$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -cE ' (idle|mix|alloc)$')
    [ "$up" -ge "$NNODES" ] && return 0
    # A node left DOWN by an earlier run comes back once told so.
    sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 ~ /down|drain/ {print $1}' | while read -r n; do
      scontrol update NodeName="$n" State=RESUME >/dev/null 2>&1
    done
    sleep 0.25
  done
  sinfo -N >&2
  die "nodes did not become idle within 30 s (logs in $BASE/log)"
}

cmd_up() {
  check_host
  mkdir -p "$BASE"
  install_packages
  write_config
  start_munge
  setup_network
  start_daemons
  wait_idle
  say "up: ${NODES[*]} ($CPUS CPUs each), SLURM_CONF=$CONF"
}

kill_pidfile() {  # pidfile comm: SIGTERM it and remember its PID in $pids, to wait for it afterwards
  pid_alive "$1" "$2" || { rm -f "$1"; return 0; }
  pids+=("$(cat "$1")")
  kill -TERM "${pids[-1]}" 2>/dev/null
}

cmd_down() {
  local pids=() ns p t0
  [ "$(id -u)" = 0 ] || skip "needs root"
  export SLURM_CONF=$CONF
  if [ -f "$CONF" ] && pid_alive "$BASE/slurmctld.pid" slurmctld; then
    # End the jobs first so their steps are ended by Slurm, not orphaned.
    timeout 10 scancel --full --quiet --user=root 2>/dev/null
    t0=$SECONDS
    while ((SECONDS - t0 < 15)) && [ -n "$(timeout 5 squeue -h -o %i 2>/dev/null)" ]; do sleep 0.25; done
  fi
  # All daemons at once: each takes ~2 s to stop.
  for ns in "${NODES[@]}"; do kill_pidfile "$BASE/slurmd-$ns.pid" slurmd; done
  kill_pidfile "$BASE/slurmctld.pid" slurmctld
  [ -f "$BASE/munged.pid" ] && kill_pidfile "$BASE/munged.pid" munged
  t0=$SECONDS
  for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null && ((SECONDS - t0 < 15)); do sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  done
  rm -f "$BASE"/slurmd-*.pid "$BASE/slurmctld.pid" "$BASE/munged.pid"
  # Whatever still lives in a node's namespace was started through this cluster (job steps, Ray).
  for ns in "${NODES[@]}"; do
    [ -e "/run/netns/$ns" ] || continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip link del "veth-$ns" 2>/dev/null   # explicitly, else the removal with the namespace is asynchronous
    ip netns del "$ns" 2>/dev/null
  done
  ip link del "$BRIDGE" 2>/dev/null
  say "down"
}

cmd_status() {
  local ns rc=0
  export SLURM_CONF=$CONF
  pid_alive "$BASE/slurmctld.pid" slurmctld && echo "slurmctld: running (pid $(cat "$BASE/slurmctld.pid"))" \
    || { echo "slurmctld: not running"; rc=3; }
  for ns in "${NODES[@]}"; do
    pid_alive "$BASE/slurmd-$ns.pid" slurmd && echo "slurmd $ns: running (pid $(cat "$BASE/slurmd-$ns.pid"))" \
      || { echo "slurmd $ns: not running"; rc=3; }
  done
  [ "$rc" = 0 ] && sinfo -N
  return "$rc"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status   (SLURMCI_BASE=${BASE})" >&2; exit 2 ;;
esac
