"""When checkpoints are written and how many are kept."""

from dataclasses import dataclass, field
from typing import Literal

from harness.spec.section import Section


@dataclass
class CheckpointConfig(Section):
    """When checkpoints are written and how many are kept."""

    # Save every N steps (also at the end, when preempted, and when moving off a node; 0: only then), or
    # "auto": every sqrt(2 C M) seconds (Young), C the measured blocking cost of a save, M the run's mean
    # time between interruptions; recomputed at every start.
    every: int | Literal["auto"] = 1000
    every_min: float = 0.0  # also save when this many minutes of the run passed since the last save (0: off)
    mtbi_prior_h: float = 24.0  # "auto": mean time between interruptions assumed until the run has seen some
    cost_prior_s: float = 10.0  # "auto": a save's blocking cost (seconds) assumed until one was measured
    keep: int = 2  # keep the newest K; at least 2, since the newest may be unusable if a node dies mid-save
    permanent_every: int = 0  # also keep every checkpoint whose step is a multiple of N forever (0: none)
    keep_steps: list[int] = field(default_factory=list)  # also save at these steps, kept for good (branch points)
    async_save: bool = False  # copy state to CPU, write it in the background; training waits only for the copy

    def check(self) -> list[str]:
        """Problems with these settings, each naming its field."""
        return [msg for bad, msg in [
            (self.every != "auto" and self.every < 0, f"every: must be >= 0 or 'auto', got {self.every}"),
            (self.every_min < 0, f"every_min: must be >= 0, got {self.every_min}"),
            (self.mtbi_prior_h <= 0, f"mtbi_prior_h: must be positive, got {self.mtbi_prior_h}"),
            (self.cost_prior_s <= 0, f"cost_prior_s: must be positive, got {self.cost_prior_s}"),
            (self.keep < 2, f"keep: must be >= 2 (the newest may be unusable), got {self.keep}"),
            (self.permanent_every < 0, f"permanent_every: must be >= 0, got {self.permanent_every}"),
            (any(s <= 0 for s in self.keep_steps), f"keep_steps: must be positive steps, got {self.keep_steps}"),
        ] if bad]
