"""What a job runs when its training step has ended (sbatch/train.sh asks it; harness.submit's jobs do
the same in-process):

    python -m harness.cluster after-step RUN_DIR   # requeue the job if its run asks; print the outcome
                                                   # (what it does goes to stderr, the job log)
"""

import argparse
import os

from harness.cluster.job import after_step
from harness.run_dir import RunDir


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["after-step"])
    p.add_argument("run_dir")
    args = p.parse_args(argv)
    print(after_step(RunDir(args.run_dir), os.environ.get("SLURM_JOB_ID")))


if __name__ == "__main__":
    main()
