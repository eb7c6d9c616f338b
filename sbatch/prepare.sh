#!/bin/bash
# sbatch sbatch/prepare.sh SOURCE [harness.prepare options]    e.g.  sbatch sbatch/prepare.sh fineweb-edu-10b
#
# Tokenise a corpus on one CPU node with all the cores of the allocation. Preparation resumes where
# it stopped, so a requeued or resubmitted job loses nothing.
#SBATCH --job-name=prepare
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=32
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=log/slurm-%x-%j.out

set -euo pipefail
[ $# -ge 1 ] || { echo "usage: sbatch sbatch/prepare.sh SOURCE [options]" >&2; exit 2; }
exec python -m harness.prepare "$@" --workers "${SLURM_CPUS_PER_TASK:-1}"
