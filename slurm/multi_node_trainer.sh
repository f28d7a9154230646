#!/bin/bash
# Train an RLlib agent on several Slurm nodes: one Ray node per Slurm node, the trainer on the first.
# Modelled on Ray's slurm-basic.sh. Submit from the repository root; arguments go to the trainer:
#
#   sbatch slurm/multi_node_trainer.sh                              # PPO on CartPole-v0
#   sbatch slurm/multi_node_trainer.sh --name-env Acrobot-v1 --stop-iters 200
#   TRAINER=custom_gym_env/custom_env_trainer.py sbatch slurm/multi_node_trainer.sh
#   sbatch slurm/multi_node_trainer.sh --name myrun --resume       # continue a run by hand
#
# At the wall time the job checkpoints and requeues itself until the run meets its stop criterion
# (RLHPC_MAX_JOBS jobs at most, default 10; RLHPC_REQUEUE=0 turns it off): see slurm/README.md.
#
# Everything Ray-specific (ports, token, temp dirs, waiting, teardown) is in slurm/ray_cluster.sh.

#SBATCH --job-name=rlhpc-multi-node
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1          # one `ray start` per node; Ray schedules the work inside
#SBATCH --cpus-per-task=36           # all cores of a node go to that node's Ray
#SBATCH --time=01:00:00
#SBATCH --signal=B:USR1@120          # 2 minutes before the limit: checkpoint, stop, requeue (ray_cluster.sh)
#SBATCH --requeue                    # ... and the next job of the chain resumes the run
#SBATCH --open-mode=append           # one log for the whole chain
##SBATCH --account=<your_account>    # uncomment where the cluster wants an account
##SBATCH --partition=<partition>
##SBATCH --mem=0                     # all of each node's memory

# --- Python environment: `python` and `ray` must come from the environment that has ray[rllib] ---------
# module load python/3.11              # e.g. with environment modules
# source ~/miniconda3/bin/activate && conda activate rlhpc
if [ -n "${RLHPC_VENV:-}" ]; then
  # shellcheck disable=SC1091
  source "$RLHPC_VENV/bin/activate"    # RLHPC_VENV=/path/to/.venv sbatch ... (no editing needed)
fi

# sbatch runs a copy of this file from a spool directory, so find the repository from where we were submitted.
RLHPC_ROOT=${RLHPC_ROOT:-$SLURM_SUBMIT_DIR}
# shellcheck source=slurm/ray_cluster.sh
source "$RLHPC_ROOT/slurm/ray_cluster.sh" || exit 1

# --- preflight: what would break Ray on these nodes, found in a second, each with its fix --------------
ray_cluster_doctor "$@"

# --- Ray: head on the first node (where this script runs), a worker on every other node -----------------
cpus=${SLURM_CPUS_PER_TASK:-$SLURM_CPUS_ON_NODE}
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
ray_cluster_start_head "${nodes[0]}" "$cpus"
for node in "${nodes[@]:1}"; do
  ray_cluster_start_worker "$node" "$cpus"
done
ray_cluster_wait "${#nodes[@]}"

# --- the trainer --------------------------------------------------------------------------------------
# One env runner per CPU of the allocation, less one for the driver and its learner, unless --num-cpus
# was given.
case " $* " in
  *" --num-cpus "* | *" --num-cpus="*) ;;
  *) set -- --num-cpus "$((cpus * ${#nodes[@]} - 1))" "$@" ;;
esac
trainer=${TRAINER:-simple_example/simple_trainer.py}
[[ $trainer == /* ]] || trainer=$RLHPC_ROOT/$trainer
ray_cluster_run_trainer python "$trainer" "$@"
