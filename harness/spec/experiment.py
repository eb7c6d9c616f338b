"""The experiment spec: one `Experiment` composed of each component's own settings.

An experiment is a Python file in experiments/ that defines `spec = Experiment(...)`, or
`sweep = [Experiment(...), ...]` for several runs submitted as one job array. Any field can be
overridden on the command line (`--optim.lr 3e-4`; `--help` lists them). The resolved spec is
written to RUN_DIR/config.json, and a resumed run checks itself against it.

This package imports no torch: a login node reads, checks and submits specs in a fraction of a second.
"""

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.run_dir import STEP_DIR
from harness.spec.checkpoint import CheckpointConfig
from harness.spec.cluster import ClusterConfig
from harness.spec.data import DataConfig
from harness.spec.eval import EvalConfig
from harness.spec.log import LogConfig
from harness.spec.model import ModelConfig
from harness.spec.optim import OptimConfig, ScheduleConfig
from harness.spec.section import Section, SpecError
from harness.spec.train import TrainConfig


@dataclass
class Experiment(Section):
    """One training run."""

    name: str = "experiment"  # run name: the Slurm job name and the default run directory log/<name>
    run_dir: str = ""  # checkpoints, metrics and logs (empty: log/<name>)
    seed: int = 1337  # seeds initialisation, data order and samples
    # Start from this checkpoint of another run (RUN_DIR/checkpoints/step_XXXXXXXX) with everything an exact
    # resume needs (weights, optimizer, data position, random streams, step), then follow this spec's
    # schedule: a cooldown branch of a constant-rate trunk (a fresh run only; its own checkpoints win).
    branch_from: str = ""
    # Run directories of the runs that branch from this one's checkpoints: under Slurm each is queued when
    # the checkpoint it starts from is written (keep those steps in checkpoint.keep_steps).
    branches: list[str] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def check(self) -> list[str]:
        """Problems with the run's own fields (its components check theirs)."""
        ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name) is not None
        step = self.branch_step()
        return [msg for bad, msg in [
            (not ok, f"name: {self.name!r} must be letters, digits, '.', '_' or '-' (it names the job and the run "
                     "directory)"),
            (bool(self.branch_from) and step is None,
             f"branch_from: {self.branch_from!r} is not a checkpoint directory (RUN_DIR/checkpoints/step_XXXXXXXX)"),
            (step is not None and step >= self.schedule.steps,
             f"branch_from: {self.branch_from} is at or past this run's last step (schedule.steps="
             f"{self.schedule.steps}): nothing would be left to train"),
            (bool(self.branch_from and self.model.init_from),
             "branch_from: a run starts from one source: branch_from (weights, optimizer, data position) or "
             f"model.init_from (weights only), not both (model.init_from={self.model.init_from!r})"),
        ] if bad]

    def branch_step(self) -> int | None:
        """The step that branch_from starts at (None: no branch_from, or not a checkpoint directory)."""
        found = STEP_DIR.match(Path(self.branch_from).name) if self.branch_from else None
        return int(found.group(1)) if found else None


# Fields whose change makes a checkpoint meaningless for the new spec (the data itself is checked
# through the reader state's dataset fingerprint, as are world size and batch shape).
# A branch's own checkpoints descend from its branch_from: another source makes them meaningless too.
RESUME_BREAKING = ("model.", "train.seq_len", "seed", "data.dir", "data.shuffle", "branch_from")

# Fields that resolve() derives from others: a difference in them is a difference in what they come
# from, so comparisons of specs (analysis.compare's groups, the report's "differs in") leave them out.
DERIVED = ("optim.scaled_lr", "optim.scaled_min_lr")


def resolve(exp: Experiment) -> Experiment:
    """Fill in what defaults to something else (run dir, model sizes from the preset) and what is derived
    (the learning rates after optim.lr_scaling). Resolving twice changes nothing."""
    try:
        model = exp.model.resolved()
    except ValueError as e:
        raise SpecError(str(e)) from None
    optim = exp.optim
    if (lrs := optim.scaled(exp.schedule.min_lr, exp.train.batch_tokens)) is not None:
        optim = dataclasses.replace(optim, scaled_lr=lrs[0], scaled_min_lr=lrs[1])
    return dataclasses.replace(exp, run_dir=exp.run_dir or f"log/{exp.name}", model=model, optim=optim)
