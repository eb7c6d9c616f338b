"""What the trainer evaluates, and how often."""

import warnings
from dataclasses import InitVar, dataclass, field

from harness.spec.section import Section


@dataclass
class EvalConfig(Section):
    """What the trainer evaluates, and how often (in optimizer steps; 0 turns a kind off). Tasks are
    named as `python -m harness.eval --list` lists them (the registry in harness/eval/registry.py)."""

    val_every: int = 250  # validation loss every N steps, and at the start and the end
    val_tokens: int = 10_485_760  # tokens per validation pass: the same fixed tokens every time
    tasks: list[str] = field(default_factory=lambda: ["hellaswag_nanogpt"])  # benchmarks scored in the loop
    tasks_every: int = 250  # the tasks every N steps, and at the end
    tasks_limit: int = 0  # only the first N examples of each task (0: all)
    tasks_data: str = ""  # where the tasks' data is (empty: each task's default; see harness.eval --list)
    tasks_batch: int = 8  # examples per forward pass when scoring tasks (a GPU takes many more)
    sample_every: int = 250  # a text sample from rank 0 every N steps
    sample_prompt: str = "Hello, I'm a language model,"  # where samples start
    sample_tokens: int = 64  # tokens per sample
    # The names before the task registry, still taken from experiment files written for them (never
    # stored: the run's config.json has the fields above).
    hellaswag_every: InitVar[int | None] = None
    hellaswag_limit: InitVar[int | None] = None
    hellaswag_data: InitVar[str | None] = None

    def __post_init__(self, hellaswag_every: int | None, hellaswag_limit: int | None,
                      hellaswag_data: str | None) -> None:
        old = {"hellaswag_every": hellaswag_every, "hellaswag_limit": hellaswag_limit, "hellaswag_data": hellaswag_data}
        if given := [k for k, v in old.items() if v is not None]:
            warnings.warn(f"EvalConfig({', '.join(given)}): these are tasks=['hellaswag_nanogpt'], tasks_every, "
                          "tasks_limit and tasks_data now", DeprecationWarning, stacklevel=3)
            legacy = migrate_hellaswag(old)
            self.tasks = legacy.get("tasks", self.tasks)
            self.tasks_every = legacy.get("tasks_every", self.tasks_every)
            self.tasks_limit = legacy.get("tasks_limit", self.tasks_limit)
            self.tasks_data = legacy.get("tasks_data", self.tasks_data)

    def check(self) -> list[str]:
        """Problems with these settings, each naming its field (task names are checked against the registry
        by harness.cluster.inputs, which knows it)."""
        names = ("val_every", "tasks_every", "tasks_limit", "sample_every", "sample_tokens")
        negative = [f"{n}: must be >= 0, got {getattr(self, n)}" for n in names if getattr(self, n) < 0]
        negative += [f"tasks_batch: must be >= 1, got {self.tasks_batch}"] if self.tasks_batch < 1 else []
        repeated = [f"tasks: {t!r} is listed twice" for t in dict.fromkeys(self.tasks) if self.tasks.count(t) > 1]
        return negative + repeated


def migrate_hellaswag(old: dict) -> dict:
    """The eval fields of spec version 1 (hellaswag_every, _limit, _data) as the task fields that replace them."""
    new = {}
    if old.get("hellaswag_every") is not None:
        every = old["hellaswag_every"]
        new |= {"tasks": ["hellaswag_nanogpt"] if every else [], "tasks_every": every}
    if old.get("hellaswag_limit") is not None:
        new["tasks_limit"] = old["hellaswag_limit"]
    if old.get("hellaswag_data") is not None:
        new["tasks_data"] = old["hellaswag_data"]
    return new
