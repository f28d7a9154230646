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
# This shell does the work on the nodes (temp dirs, token file, starting and ending Ray, traps, signals). What
# the job decides (ports, node address, the next job's command line, whether to requeue) is in Python, shared
# with the doctor: `python -m rlhpc.slurm.job SUBCOMMAND` (rlhpc/slurm/job.py says each rule and why).
#
# What it takes care of, and why:
#  - Ports come from the job id, so two jobs whose heads share a node do not collide, and stay below Ray's worker
#    ports (rlhpc/slurm/nodes.py); a port another job's Ray holds is skipped.
#  - Each node gets its own short --temp-dir on node-local storage: Ray's unix sockets break on NFS and are
#    limited to 107 bytes, and two raylets on one file system must not share a directory.
#  - Token authentication with a fresh token per job, in a mode-600 file in the job's directory (shared file
#    system, so every node reads the same file). Only the file's path travels, in RAY_AUTH_TOKEN_PATH; the token
#    is never printed and never on a command line (the trainer's args go to Python NUL-separated on stdin).
#    RAY_AUTH_MODE is always set: Ray's default depends on whether ~/.ray/auth_token happens to exist, and a head
#    and its workers that disagree never connect.
#  - Wall time: the templates ask Slurm for USR1 to the batch shell (#SBATCH --signal=B:USR1@120). The trainer
#    runs in the background so this shell can take the signal, pass it on (the trainer then checkpoints and
#    exits), and wait for it. TERM is passed on the same way.
#  - Past the wall time the job requeues itself when `rlhpc.slurm.job requeue` says so (`scontrol requeue`, last
#    thing on exit; the templates say #SBATCH --requeue and --open-mode=append); the next job resumes the run.
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

RLHPC_ROOT=${RLHPC_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
RLHPC_JOB_DIR=${RLHPC_JOB_DIR:-$HOME/.rlhpc/slurm-$SLURM_JOB_ID}
RLHPC_RAY_TMP=${RLHPC_RAY_TMP:-/tmp}
RLHPC_RAY_TIMEOUT=${RLHPC_RAY_TIMEOUT:-300}
_ray_pythonpath=$RLHPC_ROOT${PYTHONPATH:+:$PYTHONPATH}  # for our python -m steps only, not for Ray's processes

_ray_srun_pids=()      # the background `srun ... ray start --block` steps, ended on exit
_ray_nodes=()          # "node:het_group" of every Ray node, for cleaning up their temp dirs
_ray_trainer_pid=""
_ray_got_usr1=""       # set when USR1 came
_ray_usr1_left=""      # seconds the job had left then ("" if squeue did not say)
_ray_trainer_done=""   # set once the trainer has exited
_ray_requeue=""        # set when this job is to requeue itself on exit

_ray_log() { printf 'ray_cluster.sh: %s\n' "$*" >&2; }
_ray_job() {  # the job's decisions (see above), with the settings whether or not they were exported
  PYTHONPATH=$_ray_pythonpath RLHPC_RAY_PORT=${RLHPC_RAY_PORT:-} RLHPC_DOCTOR=${RLHPC_DOCTOR:-} \
    RLHPC_REQUEUE=${RLHPC_REQUEUE:-} RLHPC_MAX_JOBS=${RLHPC_MAX_JOBS:-} RLHPC_WALLTIME_LEFT=${RLHPC_WALLTIME_LEFT:-} \
    python -m rlhpc.slurm.job "$@"
}

# Bad settings (RLHPC_RAY_PORT, RLHPC_MAX_JOBS, ...) stop the job here, before anything is started.
_ray_job ports >/dev/null || exit 1

# --- per-job directory and token -----------------------------------------------------------------------
mkdir -p "$RLHPC_JOB_DIR" && chmod 700 "$RLHPC_JOB_DIR" \
  || { _ray_log "cannot create $RLHPC_JOB_DIR"; exit 1; }
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$RLHPC_JOB_DIR/auth_token
# The trainer says there which run it trains and how it ended (rlhpc/run/job_status.py); the job dir outlives a
# requeue (same job id), so the next job of the chain finds it.
export RLHPC_STATUS_FILE=$RLHPC_JOB_DIR/trainer_status.json
unset RAY_AUTH_TOKEN   # it would take precedence over the per-job file
rm -f "$RAY_AUTH_TOKEN_PATH"
# umask 077 in a subshell: the file is created mode 600; the token goes from python straight into the file.
(umask 077 && python -c 'import secrets; print(secrets.token_hex(32))' >"$RAY_AUTH_TOKEN_PATH") \
  || { _ray_log "cannot write the auth token (is 'python' the environment with Ray?)"; exit 1; }

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
  # The trainer (and the post hook) are done: nothing starts on the cluster now that needs the token.
  rm -f "$RAY_AUTH_TOKEN_PATH"
  if ((${#_ray_srun_pids[@]})); then
    # On SIGTERM srun ends its step: Slurm kills the step's processes, that node's Ray.
    kill -TERM "${_ray_srun_pids[@]}" 2>/dev/null
    t0=$SECONDS
    for pid in "${_ray_srun_pids[@]}"; do
      while kill -0 "$pid" 2>/dev/null && ((SECONDS - t0 < 30)); do sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null   # Slurm ends the step with the job
    done
  fi
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

_ray_forward() {  # SIGNAL: pass it to the trainer; before there is one, just stop
  # SIGTERM (scancel, pre-emption) went to every process of the job: the cluster is going down, and Slurm SIGKILLs
  # this shell KillWait seconds later, maybe before _ray_cleanup gets to the token. The processes that save the run
  # read it when they started; none starts now.
  [ "$1" = TERM ] && rm -f "$RAY_AUTH_TOKEN_PATH"
  if [ -n "$_ray_trainer_pid" ]; then
    _ray_log "got SIG$1: passing it to the trainer (pid $_ray_trainer_pid) and waiting for it to save and exit"
    kill -s "$1" "$_ray_trainer_pid" 2>/dev/null
    # After passing it on: squeue may be slow. The time left tells the wall time from a user's early USR1.
    if [ "$1" = USR1 ]; then _ray_got_usr1=1; _ray_usr1_left=$(_ray_job time-left); fi
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
# Runs on the node inside the srun step, with the temp dir root as $1 and the PYTHONPATH for our module as $2:
# the node's own IP and temp dir, then `ray start --block`, which lives as long as the step.
# shellcheck disable=SC2016  # expanded on the node, not here
_ray_node_script='
ip=$(PYTHONPATH=$2 python -m rlhpc.slurm.job node-ip) || exit 1
tmp=$1/ray-$SLURM_JOB_ID/$(hostname -s)
shift 2
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
    bash -c "$_ray_node_script" ray-node "$RLHPC_RAY_TMP" "$_ray_pythonpath" \
    --num-cpus="$cpus" --resources="${resources:-"{}"}" "${extra[@]}" "$@" >"$log" 2>&1 &
  _ray_srun_pids+=($!)
  _ray_nodes+=("$node:$group")
}

# [TRAINER ARGS...]: the preflight, `python -m rlhpc.doctor`, on every node of the allocation (a second or so);
# stops the job with its lines when something would break Ray. RLHPC_DOCTOR=0 skips it. The args go on stdin.
ray_cluster_doctor() {
  printf '%s\0' "$@" | _ray_job preflight || exit 1
}

# NODE CPUS [RESOURCES_JSON [HET_GROUP]]: the head, with the GCS; waits until its port answers.
ray_cluster_start_head() {
  local node=$1 cpus=$2 resources=${3:-} group=${4:-} t0=$SECONDS ports
  ray_head_ip=$(PYTHONPATH=$_ray_pythonpath srun --overlap --nodes=1 --ntasks=1 -w "$node" \
    ${group:+--het-group="$group"} python -m rlhpc.slurm.job node-ip) || exit 1
  # Jobs N and N+1000 on one node get the same default port: never start on (or join) another job's Ray.
  ports=$(_ray_job ports --probe "$ray_head_ip" --node "$node") || exit 1
  read -r RLHPC_RAY_PORT _ray_client_port _ray_agent_port <<<"$ports"
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

# NODES: wait until that many Ray nodes are alive (or a ray start step exited), then print what the cluster has.
ray_cluster_wait() {
  local t0=$SECONDS
  _ray_job wait-nodes "$1" --address "$ip_head" --srun-pids "${_ray_srun_pids[*]}" --timeout "$RLHPC_RAY_TIMEOUT" \
    --job-dir "$RLHPC_JOB_DIR" || exit 1
  _ray_log "all $1 Ray nodes up after $((SECONDS - t0))s (after the head)"
  export RAY_ADDRESS=$ip_head   # for trainers that call plain ray.init()
}

# python TRAINER.py ARGS...: run it in the background so this shell can pass signals on; return its status.
# The job module gives the argv to run (in a requeued job: resuming the run the previous job stopped) and
# decides afterwards whether to requeue; args travel NUL-separated on stdin and stdout, never on a command line.
ray_cluster_run_trainer() {
  local rc argv=()
  mapfile -d '' -t argv < <(printf '%s\0' "$@" | _ray_job trainer-argv)
  ((${#argv[@]})) || { _ray_log "no command line for the trainer (see above)"; exit 1; }
  "${argv[@]}" &
  _ray_trainer_pid=$!
  # `wait` returns early when a trapped signal arrives; keep waiting until the trainer has really exited.
  while kill -0 "$_ray_trainer_pid" 2>/dev/null; do wait "$_ray_trainer_pid"; done
  wait "$_ray_trainer_pid"; rc=$?
  _ray_trainer_pid=""
  _ray_trainer_done=1
  _ray_log "trainer exited with status $rc"
  if [ -n "$_ray_got_usr1" ] && _ray_job requeue --usr1-left="$_ray_usr1_left"; then _ray_requeue=1; fi
  if [ -n "$_ray_requeue" ] && [ -n "${RLHPC_POST_HOOK:-}" ]; then
    _ray_log "not running RLHPC_POST_HOOK: the run goes on in the next job"
  elif [ -n "${RLHPC_POST_HOOK:-}" ]; then
    _ray_log "running RLHPC_POST_HOOK"
    bash -c "$RLHPC_POST_HOOK" || { _ray_log "RLHPC_POST_HOOK failed"; ((rc)) || rc=1; }
  fi
  return "$rc"
}
