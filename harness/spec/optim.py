"""The optimizer (AdamW) and the learning-rate schedule."""

import math
from dataclasses import dataclass
from typing import Literal

from harness.spec.section import Section


@dataclass
class OptimConfig(Section):
    """AdamW settings (GPT-3 paper, table 2.1 and appendix B)."""

    lr: float = 6e-4  # peak learning rate (with lr_scaling: at base_batch_tokens)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW (beta1, beta2)
    eps: float = 1e-8  # AdamW epsilon
    weight_decay: float = 0.1  # applied to matrices and embedding tables (dim >= 2), never to biases or norms
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: no clipping)
    fused: bool | None = None  # fused AdamW kernel (None: wherever the device supports it)
    zero1: bool = False  # shard optimizer state across data-parallel ranks (ZeRO stage 1)
    # Scale lr and schedule.min_lr with the batch: by train.batch_tokens / base_batch_tokens ("linear": Goyal
    # et al. 2017, for SGD) or its square root ("sqrt": Malladi et al. 2022, for Adam); "none": as given.
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    base_batch_tokens: int = 0  # tokens per step that lr and schedule.min_lr were tuned at (lr_scaling needs it)
    # Derived by the spec's resolution, never set by hand: the peak and final learning rates that run
    # (lr and schedule.min_lr after lr_scaling), written to the run's config.json.
    scaled_lr: float | None = None
    scaled_min_lr: float | None = None

    def check(self) -> list[str]:
        """Problems with these settings, each naming its field."""
        return [msg for bad, msg in [
            (self.lr <= 0, f"lr: must be positive, got {self.lr}"),
            (not all(0 <= b < 1 for b in self.betas), f"betas: must be in [0, 1), got {self.betas}"),
            (self.eps <= 0, f"eps: must be positive, got {self.eps}"),
            (self.weight_decay < 0, f"weight_decay: must be >= 0, got {self.weight_decay}"),
            (self.grad_clip < 0, f"grad_clip: must be >= 0 (0 = off), got {self.grad_clip}"),
            (self.base_batch_tokens < 0, f"base_batch_tokens: must be >= 0, got {self.base_batch_tokens}"),
            (self.lr_scaling != "none" and self.base_batch_tokens == 0,
             f"base_batch_tokens: lr_scaling={self.lr_scaling!r} scales from it; set the batch (tokens per step) "
             "that optim.lr was tuned at"),
        ] if bad]

    def scaled(self, min_lr: float, batch_tokens: int) -> tuple[float, float] | None:
        """(peak, final) learning rates at `batch_tokens` per step after lr_scaling; None while
        base_batch_tokens or batch_tokens is missing."""
        if self.lr_scaling == "none":
            return self.lr, min_lr
        if self.base_batch_tokens <= 0 or batch_tokens <= 0:
            return None
        ratio = batch_tokens / self.base_batch_tokens
        factor = ratio if self.lr_scaling == "linear" else math.sqrt(ratio)
        return self.lr * factor, min_lr * factor


@dataclass
class ScheduleConfig(Section):
    """Linear warmup, then decay to min_lr by the last step; or warmup-stable-decay ("wsd"): the peak rate
    until the last `decay_steps` steps, which decay to min_lr (Hägele et al. 2024: such a cooldown matches
    cosine, and a constant-rate run can be cooled down from any of its checkpoints; see `branch_from`)."""

    steps: int = 19073  # optimizer steps in the whole run
    warmup: int = 715  # steps of linear warmup from lr/warmup to lr
    min_lr: float = 6e-5  # learning rate at the end of the decay (GPT-3: a tenth of the peak)
    decay: Literal["cosine", "linear", "constant", "wsd"] = "cosine"  # shape of the decay after warmup
    decay_steps: int = 0  # "wsd": the last N steps decay to min_lr (0: the rate stays constant after warmup)
    wsd_shape: Literal["linear", "cosine", "1-sqrt"] = "linear"  # "wsd": the decay's shape (1-sqrt: Hägele et al.)

    def check(self) -> list[str]:
        """Problems with these settings, each naming its field (min_lr is checked against optim.lr by the spec)."""
        return [msg for bad, msg in [
            (self.steps <= 0, f"steps: must be positive, got {self.steps}"),
            (not 0 <= self.warmup < max(self.steps, 1),
             f"warmup: must be in [0, schedule.steps={self.steps}), got {self.warmup}"),
            (not 0 <= self.decay_steps <= max(self.steps - self.warmup, 0),
             f"decay_steps: must be in [0, schedule.steps - schedule.warmup = {self.steps - self.warmup}], got "
             f"{self.decay_steps}"),
            (self.decay != "wsd" and self.decay_steps != 0,
             f"decay_steps: only schedule.decay='wsd' decays over the last N steps (decay={self.decay!r})"),
        ] if bad]


def lr_at(step: int, lr: float, sched: ScheduleConfig, min_lr: float | None = None) -> float:
    """Learning rate of update `step` (0-based), from peak `lr` to `min_lr` (default: sched.min_lr)."""
    min_lr = sched.min_lr if min_lr is None else min_lr
    if step < sched.warmup:
        return lr * (step + 1) / sched.warmup
    if sched.decay == "wsd":
        return _wsd(step, lr, sched, min_lr)
    if sched.decay == "constant" or step >= sched.steps:
        return lr if sched.decay == "constant" else min_lr
    progress = (step - sched.warmup) / max(1, sched.steps - sched.warmup)
    if sched.decay == "linear":
        return lr + (min_lr - lr) * progress
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def _wsd(step: int, lr: float, sched: ScheduleConfig, min_lr: float) -> float:
    """Warmup-stable-decay after the warmup: the peak until the last `decay_steps` updates, whose rates fall
    to min_lr, the last update's being min_lr itself (so all K of them decay, none repeats the peak). The
    rate of an update depends on how far it is from the end, not on the run's length before that: a run
    branched at step S with decay K runs exactly the rates of a straight run of S + K steps."""
    start = sched.steps - sched.decay_steps
    if sched.decay_steps == 0 or step < start:
        return lr
    progress = min(1.0, (step - start + 1) / sched.decay_steps)
    if sched.wsd_shape == "linear":
        return min_lr + (lr - min_lr) * (1.0 - progress)  # (min_lr exactly at the end)
    if sched.wsd_shape == "cosine":
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    return min_lr + (lr - min_lr) * (1.0 - math.sqrt(progress))  # "1-sqrt" (Hägele et al. 2024)
