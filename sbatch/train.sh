#!/bin/bash
# sbatch sbatch/train.sh EXPERIMENT.py [--field value ...]
#
# The plain-Slurm path, for reading and editing by hand; it behaves like `python -m harness.submit`.
# Run from the repository root with the environment active (the job inherits both). Override any
# default below on the command line: sbatch -N 4 -p big --time=48:00:00 sbatch/train.sh ...
# On CPU nodes, set the processes per node: NPROC_PER_NODE=2 sbatch --gpus-per-node=0 sbatch/train.sh ...
#
#SBATCH --job-name=harness           # renamed to the experiment's name once the job starts
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1          # one torchrun per node; it starts one worker per GPU
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --requeue                    # the job may go back into the queue (preemption, time limit)
#SBATCH --signal=B:USR2@120          # USR2 to this script 120 s before the kill: a step plus a save
#SBATCH --open-mode=append           # a requeued job appends to its log
#SBATCH --output=log/slurm-%j.out      # by job id only: the job is renamed once it starts

set -uo pipefail
[ $# -ge 1 ] || { echo "usage: sbatch sbatch/train.sh EXPERIMENT.py [--field value ...]" >&2; exit 2; }
NPROC_PER_NODE=${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}

# Validate the spec for this allocation, create or check the run directory, record this job in it,
# and set RUN_DIR, NODE_SCRIPT (what every node runs: the spec's cluster.setup lines and cluster.env,
# then torchrun; harness/cluster/job.py builds it for harness.submit too, and
# `python -m harness.submit EXPERIMENT.py --dry-run` shows it) and CONTAINER (srun's pyxis options for
# cluster.container_image and cluster.container_mounts; none without a container).
setup=$(python -m harness.submit "$@" --cluster.nodes "$SLURM_JOB_NUM_NODES" \
        --cluster.procs_per_node "$NPROC_PER_NODE" --init-run-dir) || exit 1
eval "$setup"

# The signal reaches only this shell: pass it on to every process of the job step (the workers
# save a checkpoint and exit). torchrun's agent must not die of USR2, so each node task ignores it
# before exec'ing torchrun; the trainer installs its own handler.
trap 'echo "USR2: checkpointing before the kill"; scancel --signal=USR2 "$SLURM_JOB_ID"' USR2

# bash runs a trap only between commands: run srun in the background and wait for it.
srun --kill-on-bad-exit=1 --ntasks-per-node=1 "${CONTAINER[@]}" bash -c "trap '' USR2; $NODE_SCRIPT" &
srun_pid=$!
while :; do
  wait "$srun_pid"; status=$?
  kill -0 "$srun_pid" 2>/dev/null || break  # `wait` also returns when a trapped signal arrives
done

# The run's own log says how it ended, and what the job does next (harness/cluster/job.py after_step):
# stopped at a checkpoint by a signal (preemption, time limit, SIGTERM): back into the queue;
# moved off a bad node: back into the queue without it. The next start resumes from the checkpoint.
outcome=$(python -m harness.cluster after-step "$RUN_DIR")
echo "training step ended: exit $status, run $outcome"
case "$outcome" in
  preempted|excluded) exit 0 ;;
  failed*) exit $(( status ? status : 1 )) ;;  # a failed run fails the job, so that no afterok job follows it
  *) exit "$status" ;;
esac
