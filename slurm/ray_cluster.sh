# shellcheck shell=bash
# Start a Ray cluster inside a Slurm allocation, run a trainer on it, and tear it down. Sourced by the sbatch
# templates in this folder (multi_node_trainer.sh, gpu_trainer.sh). Sourcing it writes the job's token and sets
# the traps; the functions start and stop the rest:
#
#   source "$RLHPC_ROOT/slurm/ray_cluster.sh"
#   ray_cluster_doctor "$@"         # the preflight on every node (python -m rlhpc.doctor)
#   ray_cluster_start_head   NODE CPUS [RESOURCES_JSON [HET_GROUP]]   # the batch host; exports ip_head=IP:PORT
#   ray_cluster_start_worker NODE CPUS [RESOURCES_JSON [HET_GROUP]]   # once per other node
#   ray_cluster_wait NODES          # poll until NODES Ray nodes are alive; print a report
#   ray_cluster_run_trainer python TRAINER.py ARGS...   # returns the trainer's exit status
#                                   # (and requeues the job when the wall time stopped an unfinished run)
#
# What it takes care of, and why:
#  - Ports come from the job id, so two jobs whose heads share a node do not collide. Everything stays below
#    10002, where Ray's worker ports (10002-19999) begin.
#  - Each node gets its own short --temp-dir on node-local storage: Ray's unix sockets break on NFS and are
#    limited to 107 bytes, and two raylets on one file system must not share a directory.
#  - Token authentication with a fresh token per job, in a mode-600 file in the job's directory (shared file
#    system, so every node reads the same file). Only the file's path travels, in RAY_AUTH_TOKEN_PATH; the token
#    is never printed and never on a command line. RAY_AUTH_MODE is always set: Ray's default depends on
#    whether ~/.ray/auth_token happens to exist, and a head and its workers that disagree never connect.
#  - Wall time: the templates ask Slurm for USR1 to the batch shell (#SBATCH --signal=B:USR1@120). The trainer
#    runs in the background so this shell can take the signal, pass it on (the trainer then checkpoints and
#    exits), and wait for it. TERM is passed on the same way.
#  - Past the wall time: when that USR1 stopped a run that has not met its stop criterion, the job requeues
#    itself (`scontrol requeue`, last thing on exit; the templates say #SBATCH --requeue and --open-mode=append)
#    and the next job of the chain resumes the run (SLURM_RESTART_COUNT says which job of the chain this is;
#    the trainer's status file, which run). A run that is done, failed, or was stopped by a plain scancel (TERM)
#    or by a user's USR1 long before the limit is not requeued; nor is job RLHPC_MAX_JOBS of a chain.
#  - On exit the Ray srun steps are ended by killing those srun processes (never `ray stop`, which ends every
#    Ray on the node, other jobs' included), and the token file is removed.
#
# Settings (environment, all optional):
#   RLHPC_JOB_DIR        token and per-node `ray start` logs  (default $HOME/.rlhpc/slurm-$SLURM_JOB_ID)
#   RLHPC_RAY_TMP        node-local root for Ray's temp dirs  (default /tmp)
#   RLHPC_RAY_PORT       Ray GCS port                         (default 6379 + SLURM_JOB_ID % 1000)
#   RLHPC_RAY_TIMEOUT    seconds to wait for all nodes        (default 300)
#   RLHPC_OBJECT_STORE_MEMORY  bytes of object store per node (default: Ray's, 30% of the node's RAM)
#   RLHPC_POST_HOOK      a command run after the trainer while the cluster is still up (evaluation, checks)
#   RLHPC_KEEP_RAY_TMP=1 keep the nodes' Ray temp dirs (Ray's own logs) after the job
#   RLHPC_DOCTOR=0       skip the preflight (python -m rlhpc.doctor) before Ray starts
#   RLHPC_REQUEUE=0      do not requeue at the wall time (default 1: requeue until the run is done)
#   RLHPC_MAX_JOBS       most jobs in one chain of requeues       (default 10)
#   RLHPC_WALLTIME_LEFT  a USR1 with at most this many seconds left is the wall-time warning (default 300;
#                        a USR1 sent earlier, by `scancel --signal=USR1 --batch`, stops without requeueing).
#                        Keep it >= N + 60 for `--signal=B:USR1@N`: Slurm may signal up to 60 s early.

: "${SLURM_JOB_ID:?ray_cluster.sh runs inside a Slurm job (sbatch/salloc)}"

RLHPC_JOB_DIR=${RLHPC_JOB_DIR:-$HOME/.rlhpc/slurm-$SLURM_JOB_ID}
RLHPC_RAY_TMP=${RLHPC_RAY_TMP:-/tmp}
_ray_port_given=${RLHPC_RAY_PORT:+1}
RLHPC_RAY_PORT=${RLHPC_RAY_PORT:-$((6379 + SLURM_JOB_ID % 1000))}
RLHPC_RAY_TIMEOUT=${RLHPC_RAY_TIMEOUT:-300}

RLHPC_REQUEUE=${RLHPC_REQUEUE:-1}
RLHPC_MAX_JOBS=${RLHPC_MAX_JOBS:-10}
RLHPC_WALLTIME_LEFT=${RLHPC_WALLTIME_LEFT:-300}

_ray_srun_pids=()      # the background `srun ... ray start --block` steps, ended on exit
_ray_nodes=()          # "node:het_group" of every Ray node, for cleaning up their temp dirs
_ray_trainer_pid=""
_ray_chain_job=$((${SLURM_RESTART_COUNT:-0} + 1))  # which job of a chain of requeues this is
_ray_got_usr1=""       # set when USR1 came
_ray_usr1_left=""      # seconds the job had left then ("" if squeue did not say)
_ray_trainer_done=""   # set once the trainer has exited
_ray_requeue=""        # set when this job is to requeue itself on exit

_ray_log() { printf 'ray_cluster.sh: %s\n' "$*" >&2; }

# --- per-job directory and token -----------------------------------------------------------------------
mkdir -p "$RLHPC_JOB_DIR" && chmod 700 "$RLHPC_JOB_DIR" \
  || { _ray_log "cannot create $RLHPC_JOB_DIR"; exit 1; }
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$RLHPC_JOB_DIR/auth_token
# The trainer says there which run it trains and how it ended (rlhpc/train/trainer.py); the job dir outlives a
# requeue (same job id), so the next job of the chain finds it.
export RLHPC_STATUS_FILE=$RLHPC_JOB_DIR/trainer_status.json
unset RAY_AUTH_TOKEN   # it would take precedence over the per-job file
rm -f "$RAY_AUTH_TOKEN_PATH"
# umask 077 in a subshell: the file is created mode 600; the token goes from python straight into the file.
(umask 077 && python -c 'import secrets; print(secrets.token_hex(32))' >"$RAY_AUTH_TOKEN_PATH") \
  || { _ray_log "cannot write the auth token (is 'python' the environment with Ray?)"; exit 1; }

# Ports for the head, all below Ray's worker port range and offset from the GCS port by the same job id.
# The dashboard is off, but its agent still listens (when ray[default] is installed): give it a port too.
_ray_set_ports() {
  RLHPC_RAY_PORT=$1
  _ray_client_port=$((RLHPC_RAY_PORT + 1000))
  _ray_agent_port=$((RLHPC_RAY_PORT + 2000))
}
_ray_set_ports "$RLHPC_RAY_PORT"
if ((RLHPC_RAY_PORT < 1024 || _ray_agent_port >= 10002)); then
  _ray_log "RLHPC_RAY_PORT=$RLHPC_RAY_PORT: need 1024 <= port and port + 2000 < 10002 (Ray's worker ports)"
  exit 1
fi
_ray_port_answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }  # IP PORT

# --- cleanup and signals ----------------------------------------------------------------------------------
_ray_cleanup() {
  local rc=$? pid t0 entry node group
  trap - EXIT USR1 TERM
  if [ -n "$_ray_trainer_pid" ] && kill -0 "$_ray_trainer_pid" 2>/dev/null; then
    _ray_log "stopping the trainer (pid $_ray_trainer_pid)"
    kill -TERM "$_ray_trainer_pid" 2>/dev/null
    t0=$SECONDS
    while kill -0 "$_ray_trainer_pid" 2>/dev/null && ((SECONDS - t0 < 60)); do sleep 0.5; done
  fi
  if ((${#_ray_srun_pids[@]})); then
    # On SIGTERM srun ends its step: Slurm kills the step's processes, that node's Ray.
    kill -TERM "${_ray_srun_pids[@]}" 2>/dev/null
    t0=$SECONDS
    for pid in "${_ray_srun_pids[@]}"; do
      while kill -0 "$pid" 2>/dev/null && ((SECONDS - t0 < 30)); do sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null   # Slurm ends the step with the job
    done
  fi
  rm -f "$RAY_AUTH_TOKEN_PATH"
  if [ "${RLHPC_KEEP_RAY_TMP:-0}" != 1 ]; then
    for entry in "${_ray_nodes[@]}"; do
      node=${entry%%:*} group=${entry#*:}
      srun --overlap --nodes=1 --ntasks=1 -w "$node" ${group:+--het-group="$group"} \
        rm -rf "$RLHPC_RAY_TMP/ray-$SLURM_JOB_ID" >/dev/null 2>&1 &
    done
    wait
  fi
  if [ -n "$_ray_requeue" ]; then  # last: Slurm ends this job's processes as it requeues it
    scontrol requeue "$SLURM_JOB_ID" || _ray_log "scontrol requeue $SLURM_JOB_ID failed: resubmit with --resume"
  fi
  exit "$rc"
}
trap _ray_cleanup EXIT

# Seconds the job has left ("" if Slurm does not say): squeue's %L is [D-][HH:]MM:SS.
_ray_time_left() {
  local left days=0 seconds=0 part
  left=$(timeout 10 squeue -h -j "$SLURM_JOB_ID" -o %L 2>/dev/null | head -n 1 | tr -d '[:space:]')
  [[ $left =~ ^([0-9]+-)?[0-9]+(:[0-9]+)*$ ]] || return 0
  if [[ $left == *-* ]]; then days=${left%%-*}; left=${left#*-}; fi
  IFS=: read -r -a parts <<<"$left"
  for part in "${parts[@]}"; do seconds=$((seconds * 60 + 10#$part)); done
  echo $((days * 86400 + seconds))
}

# A field of the trainer's status file ("" if there is none).
_ray_status() {
  [ -s "$RLHPC_STATUS_FILE" ] || return 0
  python -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$RLHPC_STATUS_FILE" "$1" \
    2>/dev/null
}

_ray_forward() {  # SIGNAL: pass it to the trainer; before there is one, just stop
  if [ -n "$_ray_trainer_pid" ]; then
    _ray_log "got SIG$1: passing it to the trainer (pid $_ray_trainer_pid) and waiting for it to save and exit"
    kill -s "$1" "$_ray_trainer_pid" 2>/dev/null
    if [ "$1" = USR1 ]; then _ray_got_usr1=1; _ray_usr1_left=$(_ray_time_left); fi  # after: squeue may be slow
  elif [ -n "$_ray_trainer_done" ]; then
    _ray_log "got SIG$1 after the trainer exited: finishing up"
  else
    _ray_log "got SIG$1 before the trainer started: stopping"
    exit 1
  fi
}
trap '_ray_forward USR1' USR1
trap '_ray_forward TERM' TERM

# --- starting nodes ---------------------------------------------------------------------------------------
# A node's address for Ray, run on that node: the first IPv4 of `hostname --ip-address` (multi-homed nodes list
# several), skipping loopback ones (some images map the hostname to 127.0.1.1), else of `hostname -I`.
# shellcheck disable=SC2016  # expanded on the node, not here
_ray_pick_ip='{ hostname --ip-address; hostname -I; } 2>/dev/null | tr " " "\n" |
  grep -v "^127\." | grep -m1 -E "^[0-9]+(\.[0-9]+){3}$"'

# Runs on the node inside the srun step, with the temp dir root as $1: the node's own IP and temp dir, then
# `ray start --block`, which lives as long as the step.
# shellcheck disable=SC2016
_ray_node_script="ip=\$($_ray_pick_ip)"'
[ -n "$ip" ] || { echo "no IPv4 address other than loopback on $(hostname)" >&2; exit 1; }
tmp=$1/ray-$SLURM_JOB_ID/$(hostname -s)
shift
mkdir -p "$tmp" || exit 1
exec ray start --block --node-ip-address="$ip" --temp-dir="$tmp" --disable-usage-stats "$@"
'

_ray_srun_node() {  # NODE CPUS RESOURCES GROUP LOG -- ray start args...
  local node=$1 cpus=$2 resources=$3 group=$4 log=$5
  shift 6
  local extra=()
  [ -n "${RLHPC_OBJECT_STORE_MEMORY:-}" ] && extra+=(--object-store-memory="$RLHPC_OBJECT_STORE_MEMORY")
  # --overlap: the Ray step must not block the short steps this script runs later on the same node.
  # --cpus-per-task explicitly: srun in Slurm 22.05 does not take it from the job's SLURM_CPUS_PER_TASK.
  srun --overlap --nodes=1 --ntasks=1 --cpus-per-task="$cpus" -w "$node" ${group:+--het-group="$group"} \
    bash -c "$_ray_node_script" ray-node "$RLHPC_RAY_TMP" \
    --num-cpus="$cpus" --resources="${resources:-"{}"}" "${extra[@]}" "$@" >"$log" 2>&1 &
  _ray_srun_pids+=($!)
  _ray_nodes+=("$node:$group")
}

# [TRAINER ARGS...]: the preflight, `python -m rlhpc.doctor`, on every node of the allocation (a second or so);
# stops the job with its lines when something would break Ray. RLHPC_DOCTOR=0 skips it.
ray_cluster_doctor() {
  local arg flags=() next=""
  if [ "${RLHPC_DOCTOR:-1}" != 1 ]; then _ray_log "RLHPC_DOCTOR=$RLHPC_DOCTOR: no preflight"; return 0; fi
  for arg in "$@"; do  # the trainer's --storage-path (where the run writes) and --num-gpus
    if [ -n "$next" ]; then flags+=("$next" "$arg"); next=""; continue; fi
    case $arg in
      --storage-path | --num-gpus) next=$arg ;;
      --storage-path=* | --num-gpus=*) flags+=("$arg") ;;
    esac
  done
  PYTHONPATH=$RLHPC_ROOT${PYTHONPATH:+:$PYTHONPATH} python -m rlhpc.doctor "${flags[@]}" \
    || { _ray_log "the preflight found what would break Ray (lines above); RLHPC_DOCTOR=0 skips it"; exit 1; }
}

# NODE CPUS [RESOURCES_JSON [HET_GROUP]]: the head, with the GCS; waits until its port answers.
ray_cluster_start_head() {
  local node=$1 cpus=$2 resources=${3:-} group=${4:-} t0=$SECONDS
  ray_head_ip=$(srun --overlap --nodes=1 --ntasks=1 -w "$node" ${group:+--het-group="$group"} bash -c "$_ray_pick_ip")
  [ -n "$ray_head_ip" ] || { _ray_log "no IPv4 address other than loopback on $node"; exit 1; }
  # Jobs N and N+1000 on one node get the same default port: never start on (or join) another job's Ray.
  local tries=0
  while _ray_port_answers "$ray_head_ip" "$RLHPC_RAY_PORT" || _ray_port_answers "$ray_head_ip" "$_ray_client_port" \
        || _ray_port_answers "$ray_head_ip" "$_ray_agent_port"; do
    if [ -n "$_ray_port_given" ] || ((++tries > 20)); then
      _ray_log "port $RLHPC_RAY_PORT (or +1000, +2000) on $node is in use, by another job's Ray?" \
        "Set RLHPC_RAY_PORT to a free port"; exit 1
    fi
    _ray_log "port $RLHPC_RAY_PORT (or +1000, +2000) on $node is in use, by another job's Ray? Trying the next one"
    _ray_set_ports $((6379 + (RLHPC_RAY_PORT - 6379 + 1) % 1000))
  done
  export ip_head=$ray_head_ip:$RLHPC_RAY_PORT
  _ray_log "head: $node $ip_head (ray start log: $RLHPC_JOB_DIR/ray-$node.log)"
  _ray_srun_node "$node" "$cpus" "$resources" "$group" "$RLHPC_JOB_DIR/ray-$node.log" -- \
    --head --port="$RLHPC_RAY_PORT" --include-dashboard=false \
    --ray-client-server-port="$_ray_client_port" --dashboard-agent-listen-port="$_ray_agent_port"
  # Poll the GCS port instead of sleeping a fixed time; give up early if the step died.
  until (exec 3<>"/dev/tcp/$ray_head_ip/$RLHPC_RAY_PORT") 2>/dev/null; do
    if ! kill -0 "${_ray_srun_pids[-1]}" 2>/dev/null; then
      _ray_log "the Ray head on $node exited; its log:"; tail -n 30 "$RLHPC_JOB_DIR/ray-$node.log" >&2; exit 1
    fi
    if ((SECONDS - t0 > RLHPC_RAY_TIMEOUT)); then
      _ray_log "the Ray head on $node did not open port $RLHPC_RAY_PORT within ${RLHPC_RAY_TIMEOUT}s"; exit 1
    fi
    sleep 0.25
  done
}

# NODE CPUS [RESOURCES_JSON [HET_GROUP]]: a worker that joins the head at $ip_head.
ray_cluster_start_worker() {
  local node=$1 cpus=$2 resources=${3:-} group=${4:-}
  _ray_srun_node "$node" "$cpus" "$resources" "$group" "$RLHPC_JOB_DIR/ray-$node.log" -- --address="$ip_head"
}

# NODES: wait until that many Ray nodes are alive, then print what the cluster has.
ray_cluster_wait() {
  local t0=$SECONDS
  # Python reads the token from RAY_AUTH_TOKEN_PATH like any Ray process; the script comes on stdin.
  RLHPC_SRUN_PIDS="${_ray_srun_pids[*]}" python - "$1" "$RLHPC_RAY_TIMEOUT" "$RLHPC_JOB_DIR" <<'EOF' || exit 1
import os, sys, time
import ray

want, timeout, job_dir = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ray.init(address=os.environ["ip_head"], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + timeout
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= want:
        break
    dead = [p for p in os.environ["RLHPC_SRUN_PIDS"].split() if not os.path.exists(f"/proc/{p}")]
    if dead or time.monotonic() > deadline:
        why = f"{len(dead)} ray start step(s) exited" if dead else f"timeout after {timeout:.0f}s"
        print(f"ray_cluster.sh: only {len(alive)} of {want} Ray nodes joined ({why}); "
              f"see the ray-*.log files in {job_dir}", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.5)

standard = {"CPU", "GPU", "memory", "object_store_memory"}
print(f"Ray cluster: {len(alive)} nodes, {sum(n['Resources'].get('CPU', 0) for n in alive):g} CPUs, "
      f"{sum(n['Resources'].get('GPU', 0) for n in alive):g} GPUs")
for n in sorted(alive, key=lambda n: n["NodeManagerAddress"]):
    r = n["Resources"]
    custom = " ".join(f"{k}={v:g}" for k, v in sorted(r.items())
                      if k not in standard and not k.startswith("node:"))
    print(f"  node {n['NodeManagerHostname']} {n['NodeManagerAddress']}: "
          f"CPUs={r.get('CPU', 0):g} GPUs={r.get('GPU', 0):g} {custom}".rstrip())
EOF
  _ray_log "all $1 Ray nodes up after $((SECONDS - t0))s (after the head)"
  export RAY_ADDRESS=$ip_head   # for trainers that call plain ray.init()
}

# python TRAINER.py ARGS...: run it in the background so this shell can pass signals on; return its status.
# In a requeued job (the next of a chain) the trainer resumes the run the previous job stopped.
ray_cluster_run_trainer() {
  local rc arg shown=() hide=0 run kept=() skip_value=""
  if ((_ray_chain_job > 1)) && run=$(_ray_status experiment) && [ -n "$run" ]; then
    _ray_log "job $_ray_chain_job of at most $RLHPC_MAX_JOBS in this chain: resuming $run" \
      "after iteration $(_ray_status iteration) (the previous job stopped it: $(_ray_status ending))"
    rm -f "$RLHPC_STATUS_FILE"  # read: from here on only this job's trainer says how the run ended
    for arg in "$@"; do  # whatever --resume the job was submitted with, the run the chain trains
      if [ -n "$skip_value" ]; then skip_value=""; [[ $arg == -* ]] || continue; fi
      case $arg in
        --resume=*) continue ;;
        --resume) skip_value=1; continue ;;
      esac
      kept+=("$arg")
    done
    set -- "${kept[@]}" --resume "$run"
  elif [ "$RLHPC_REQUEUE" = 1 ]; then
    _ray_log "job $_ray_chain_job of at most $RLHPC_MAX_JOBS in this chain (the job requeues itself at the" \
      "wall time until the run is done; RLHPC_REQUEUE=0 turns that off)"
    rm -f "$RLHPC_STATUS_FILE"
  fi
  for arg in "$@"; do   # the log never shows a token given as --redis-password (or an abbreviation)
    if ((hide)); then shown+=("<token>"); hide=0
    elif [[ $arg == --red*=* ]]; then shown+=("${arg%%=*}=<token>")
    elif [[ $arg == --red* ]]; then shown+=("$arg"); hide=1
    else shown+=("$arg"); fi
  done
  _ray_log "running: ${shown[*]}"
  "$@" &
  _ray_trainer_pid=$!
  # `wait` returns early when a trapped signal arrives; keep waiting until the trainer has really exited.
  while kill -0 "$_ray_trainer_pid" 2>/dev/null; do wait "$_ray_trainer_pid"; done
  wait "$_ray_trainer_pid"; rc=$?
  _ray_trainer_pid=""
  _ray_trainer_done=1
  _ray_log "trainer exited with status $rc"
  _ray_decide_requeue
  if [ -n "$_ray_requeue" ] && [ -n "${RLHPC_POST_HOOK:-}" ]; then
    _ray_log "not running RLHPC_POST_HOOK: the run goes on in the next job"
  elif [ -n "${RLHPC_POST_HOOK:-}" ]; then
    _ray_log "running RLHPC_POST_HOOK"
    bash -c "$RLHPC_POST_HOOK" || { _ray_log "RLHPC_POST_HOOK failed"; ((rc)) || rc=1; }
  fi
  return "$rc"
}

# After the trainer: requeue this job if the wall-time warning stopped a run that is not done.
_ray_decide_requeue() {
  local ending
  ending=$(_ray_status ending)
  [ -n "$_ray_got_usr1" ] || return 0   # no USR1: the run ended by itself, or by a plain scancel (TERM)
  if [ -z "$_ray_usr1_left" ]; then
    _ray_log "squeue did not say how much time the job had left at USR1: taking it for the wall time"
  fi
  if [ -n "$_ray_usr1_left" ] && ((_ray_usr1_left > RLHPC_WALLTIME_LEFT)); then
    _ray_log "USR1 came with ${_ray_usr1_left}s left, more than RLHPC_WALLTIME_LEFT=${RLHPC_WALLTIME_LEFT}s:" \
      "a request to stop, not the wall time; not requeueing"
  elif [ "$RLHPC_REQUEUE" != 1 ]; then
    _ray_log "RLHPC_REQUEUE=$RLHPC_REQUEUE: not requeueing; resubmit with --resume to go on"
  elif [ "$ending" != stopped ]; then
    _ray_log "not requeueing: the run ended ${ending:-without saying how} (see above)"
  elif ((_ray_chain_job >= RLHPC_MAX_JOBS)); then
    _ray_log "not requeueing: this was job $_ray_chain_job of at most RLHPC_MAX_JOBS=$RLHPC_MAX_JOBS;" \
      "resubmit with --resume $(_ray_status experiment) to go on"
  else
    _ray_log "requeueing: the wall time stopped the run after iteration $(_ray_status iteration);" \
      "job $((_ray_chain_job + 1)) of at most $RLHPC_MAX_JOBS resumes it"
    _ray_requeue=1
  fi
}
