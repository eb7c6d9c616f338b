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
        return [] if ok else [f"name: {self.name!r} must be letters, digits, '.', '_' or '-' (it names the job "
                              "and the run directory)"]


# Fields whose change makes a checkpoint meaningless for the new spec (the data itself is checked
# through the reader state's dataset fingerprint, as are world size and batch shape).
RESUME_BREAKING = ("model.", "train.seq_len", "seed", "data.dir", "data.shuffle")

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
