#!/bin/bash
# Train with a GPU learner: a heterogeneous Slurm job with three groups of nodes.
#   group 0  the Ray head; the driver (Tune and the algorithm) runs here
#   group 1  rollout nodes: CPU only, the env runners
#   group 2  the learner node with the GPU
# Env runners and learner are pinned to their groups with custom Ray resources (rollout_node, learner_node).
# Submit from the repository root; arguments go to the trainer:
#
#   sbatch slurm/gpu_trainer.sh
#   sbatch slurm/gpu_trainer.sh --name-env LunarLander-v3 --stop-iters 500
#   sbatch slurm/gpu_trainer.sh --name myrun --resume              # continue a run by hand
#
# At the wall time the job checkpoints and requeues itself (all groups) until the run meets its stop
# criterion (RLHPC_MAX_JOBS jobs at most, default 10; RLHPC_REQUEUE=0 turns it off): see slurm/README.md.
#
# Options given to sbatch on the command line apply to every group (e.g. --nodes=1 makes each group 1 node).

#SBATCH --job-name=rlhpc-gpu
#SBATCH --time=01:00:00
#SBATCH --signal=B:USR1@120          # 2 minutes before the limit: checkpoint, stop, requeue (ray_cluster.sh)
#SBATCH --requeue                    # ... and the next job of the chain resumes the run
#SBATCH --open-mode=append           # one log for the whole chain
##SBATCH --account=<your_account>    # uncomment where the cluster wants an account
##SBATCH --partition=<partition>     # may differ per group (e.g. a GPU partition for group 2)
# group 0: Ray head and driver
#SBATCH --nodes=1 --ntasks-per-node=1 --cpus-per-task=4
#SBATCH hetjob
# group 1: rollout nodes
#SBATCH --nodes=2 --ntasks-per-node=1 --cpus-per-task=36
#SBATCH hetjob
# group 2: GPU learner
#SBATCH --nodes=1 --ntasks-per-node=1 --cpus-per-task=8 --gres=gpu:1

# --- Python environment: `python` and `ray` must come from the environment that has ray[rllib] ---------
# module load python/3.11 cuda/12.4    # e.g. with environment modules
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

# --- Ray: one node per Slurm node, started in its own group with `srun --het-group=N` -------------------
# In the batch shell Slurm describes each group in *_HET_GROUP_N variables. GPUs are not passed to Ray:
# it counts the ones Slurm made visible (CUDA_VISIBLE_DEVICES in the group-2 step).
mapfile -t head < <(scontrol show hostnames "$SLURM_JOB_NODELIST_HET_GROUP_0")
mapfile -t rollout < <(scontrol show hostnames "$SLURM_JOB_NODELIST_HET_GROUP_1")
mapfile -t learner < <(scontrol show hostnames "$SLURM_JOB_NODELIST_HET_GROUP_2")
ray_cluster_start_head "${head[0]}" "$SLURM_CPUS_PER_TASK_HET_GROUP_0" '{"head_node": 1000}' 0
for node in "${rollout[@]}"; do
  ray_cluster_start_worker "$node" "$SLURM_CPUS_PER_TASK_HET_GROUP_1" '{"rollout_node": 1000}' 1
done
for node in "${learner[@]}"; do
  ray_cluster_start_worker "$node" "$SLURM_CPUS_PER_TASK_HET_GROUP_2" '{"learner_node": 1000}' 2
done
ray_cluster_wait $((${#head[@]} + ${#rollout[@]} + ${#learner[@]}))

# --- the trainer --------------------------------------------------------------------------------------
# One env runner per CPU of the rollout group unless --num-cpus was given; each env runner asks for a bit of
# rollout_node and the learner for a bit of learner_node, which only their groups' nodes have.
case " $* " in
  *" --num-cpus "* | *" --num-cpus="*) ;;
  *) set -- --num-cpus "$((SLURM_CPUS_PER_TASK_HET_GROUP_1 * ${#rollout[@]}))" "$@" ;;
esac
trainer=${TRAINER:-simple_example_gpu/simple_trainer.py}
[[ $trainer == /* ]] || trainer=$RLHPC_ROOT/$trainer
ray_cluster_run_trainer python "$trainer" --runner-resource rollout_node --learner-resource learner_node "$@"
