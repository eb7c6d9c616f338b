"""The trunk's side of branching: queueing the runs that branch from this one (spec `branches`) once the
checkpoints they start from are written (harness.cluster.branches says which are due and queues them).

Only rank 0 acts, and only reads files and starts `harness.submit`: nothing here touches the training state,
so the ranks need not agree. It comes before the save policy among the components, so that at the end its
last look follows the save policy's wait for a checkpoint still being written in the background.
"""

import os
from typing import Any

from harness.cluster import branches
from harness.records import Stop
from harness.run_dir import RunDir
from harness.spec import Experiment, read_spec
from harness.train.component import Component


class Branches(Component):
    def __init__(self, runs: list[str], is_main: bool):
        self.runs = [RunDir(r) for r in runs] if is_main else []
        self.left: dict[RunDir, tuple[Experiment, int]] = {}  # branch -> (its spec, its step), until queued
        self.slurm = "SLURM_JOB_ID" in os.environ

    def on_start(self, t: Any) -> Stop | None:
        if self.runs and not self.slurm:
            t.print(f"this run's branches ({', '.join(str(r.path) for r in self.runs)}) are queued only under Slurm: "
                    "run each once this run has written the checkpoint it starts from")
            return None
        for run in self.runs:  # harness.submit wrote each branch's run dir when it submitted the ladder
            if not run.exists():
                t.print(f"branch {run.path}: no run directory, so nothing will queue it (submit it with its trunk)")
                continue
            spec = read_spec(run)
            self.left[run] = spec, branches.branch_point(spec)[1]
        self.queue_due(t, t.state.step)  # catch up: a trunk that stopped between a save and the queueing
        return None

    def after_step(self, t: Any, pending: Stop | None) -> Stop | None:
        self.queue_due(t, t.state.step)  # a background save's checkpoint becomes visible some steps later
        return None

    def on_stop(self, t: Any, stop: Stop) -> None:
        self.queue_due(t, t.state.step)

    def queue_due(self, t: Any, step: int) -> None:
        """Queue each branch whose step is reached and whose checkpoint is written; forget those that something
        else has queued or run meanwhile."""
        for run, (spec, at) in list(self.left.items()):
            if at > step or (state := branches.pending(run, spec)) == "waiting":
                continue
            del self.left[run]
            if state == "due":
                queued, said = branches.queue(run)
                t.print(f"branch {run.path} from step {at}: " + (said if queued else
                        f"NOT queued (harness.status names it; harness.submit --resume --failed queues it): {said}"))
