"""Slurm jobs: the preflight doctor, and the job's decisions that the sbatch templates call."""
