"""The Slurm-like scheduler: controller, job store, sbatch parsing, allocation, job launch."""
