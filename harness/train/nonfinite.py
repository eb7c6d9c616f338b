"""The non-finite rule, in one place: what a NaN or inf loss or gradient norm does to a run.

`train.on_nonfinite="stop"` (the default): the first step whose gradient norm is not finite is
remembered on the device, so steps that do not log never wait for it; at the next point where the
host reads values anyway (a log step, a checkpoint) the run stops, naming that step and the last
good checkpoint, and no checkpoint is written after it. Resuming is exact, so a restart with the
same spec would diverge at the same step again: it is refused at once until the spec changes.

`train.on_nonfinite="skip"`: that step's update is dropped and the run goes on (reading the norm
then syncs the device on every step).
"""

import math
from typing import Literal

import torch

from harness.run_dir import RunDir
from harness.spec import SpecError
from harness.train.component import Component


class NonFiniteError(RuntimeError):
    """The loss or gradient norm became NaN/inf at `step`."""

    def __init__(self, step: int, run: RunDir):
        good = run.checkpoint_dirs()
        self.step = step
        super().__init__(f"non-finite loss or gradient norm at step {step}; last good checkpoint: "
                         f"{good[-1] if good else 'none'} (lower optim.lr, or set train.on_nonfinite=skip, "
                         "then resume)")


class NonFiniteRule(Component):
    """Watches the gradient norm in every step (`allows_update`) and the logged loss and every save
    (`check`). A resumed run's trainer calls `refuse_to_replay` before it starts."""

    def __init__(self, policy: Literal["stop", "skip"], device: torch.device, run: RunDir):
        self.policy, self.run = policy, run
        self.first_bad = torch.full((), -1, device=device)  # the first step with a non-finite norm (-1: none)

    def allows_update(self, norm: torch.Tensor, step: int) -> bool:
        """Whether update `step` may be applied, given the global gradient norm (the same on every
        rank: it is of the all-reduced gradients, so no rank decides differently)."""
        bad = ~torch.isfinite(norm)
        if self.policy == "skip":
            if bad.item():
                print(f"step {step}: non-finite gradient norm, update skipped", flush=True)
                return False
            return True
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)
        return True

    def check(self, step: int, loss: float | None = None) -> None:
        """Raise NonFiniteError if a step so far, or the logged `loss` of `step`, was not finite."""
        if self.policy != "stop":
            return
        bad = int(self.first_bad.item())
        if bad >= 0 or (loss is not None and not math.isfinite(loss)):
            raise NonFiniteError(bad if bad >= 0 else step, self.run)


def refuse_to_replay(last_stop: dict | None, spec_hash: str, run: RunDir, resumed_from: object) -> None:
    """A run that stopped on a non-finite value and restarts (by torchrun, a requeue, by hand) with
    the same spec would retrain up to the same NaN: refuse it, saying what to change."""
    if last_stop is not None and last_stop["reason"] == "nonfinite" and last_stop.get("spec_hash") == spec_hash:
        raise SpecError(
            f"{run.path} stopped with a non-finite loss or gradient norm at step {last_stop['failed_step']}, and "
            f"resuming from {resumed_from} with the same spec would replay it exactly: change the spec (e.g. a "
            "lower --optim.lr, --optim.grad_clip) or set --train.on_nonfinite skip, then resume")
