"""Everything about a spec that can be checked from the spec alone, before anything runs.

Types are pydantic's (harness.spec.convert); each component checks its own values (`check()`); here
also what relates fields of different components. What needs the world outside the spec (the prepared
data, an init_from source, the eval tasks' data) is checked by harness.cluster.inputs.
"""

import dataclasses

from harness.spec.convert import check_types
from harness.spec.experiment import Experiment
from harness.spec.section import SpecError


def tokens_per_pass(exp: Experiment, world_size: int) -> int:
    """Tokens all ranks process in one forward pass (one sequence per rank while micro_batch is "auto")."""
    t = exp.train
    micro = 1 if t.micro_batch == "auto" else max(t.micro_batch, 0)
    return micro * max(t.seq_len, 0) * world_size


def validate(exp: Experiment, world_size: int) -> None:
    """Raise SpecError naming every field at fault, for a run on `world_size` ranks."""
    check_types(exp)
    t, o, s, e = exp.train, exp.optim, exp.schedule, exp.eval
    # With micro_batch="auto" the size is chosen at start; the arithmetic must hold for one sequence.
    auto = t.micro_batch == "auto"
    per_pass = tokens_per_pass(exp, world_size)
    what = "seq_len x world_size" if auto else "micro_batch x seq_len x world_size"
    numbers = f"{t.seq_len} x {world_size}" if auto else f"{t.micro_batch} x {t.seq_len} x {world_size}"
    across = {  # problems across components, reported after the component they name
        "train": [msg for bad, msg in [
            (t.seq_len > exp.model.block_size, f"seq_len: {t.seq_len} is longer than model.block_size="
                                               f"{exp.model.block_size}"),
            (per_pass > 0 and t.batch_tokens > 0 and t.batch_tokens % per_pass != 0,
             f"batch_tokens: {t.batch_tokens:,} is not divisible by {what} = {numbers} = {per_pass:,}"),
        ] if bad],
        "schedule": [] if 0 <= s.min_lr <= o.lr else [f"min_lr: must be in [0, optim.lr={o.lr}], got {s.min_lr}"],
        "optim": [f"{name}: {value} is derived (optim.lr and schedule.min_lr after optim.lr_scaling={o.lr_scaling!r} "
                  f"at train.batch_tokens={t.batch_tokens:,}: {want}); set those instead"
                  for name, value, want in zip(("scaled_lr", "scaled_min_lr"), (o.scaled_lr, o.scaled_min_lr),
                                               o.scaled(s.min_lr, t.batch_tokens) or (None, None), strict=True)
                  if value is not None and value != want],
        "checkpoint": [f"keep_steps: step {k} is past the last step (schedule.steps={s.steps})"
                       for k in exp.checkpoint.keep_steps if k > s.steps],
        "eval": [] if not e.val_every or per_pass <= 0 or (e.val_tokens > 0 and e.val_tokens % per_pass == 0) else [
            f"val_tokens: {e.val_tokens:,} must be a positive multiple of {what} = {per_pass:,}"],
    }
    errors = exp.check()
    for f in dataclasses.fields(exp):
        part = getattr(exp, f.name)
        if dataclasses.is_dataclass(part):
            errors += [f"{f.name}.{problem}" for problem in part.check() + across.get(f.name, [])]
    if errors:
        raise SpecError("\n".join(errors))
