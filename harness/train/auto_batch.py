"""micro_batch="auto": the largest micro-batch whose training step fits in GPU memory.

The probe runs a real forward and backward at each candidate size, largest first, and keeps the
first one whose peak memory plus the optimizer state still to come (AdamW: two fp32 moments per
parameter) stays under `train.memory_fraction` of the device's memory (the rest is headroom for the
allocator's fragmentation, evaluation and NCCL's buffers). Candidates divide the sequences each rank
must process per step, so gradient accumulation keeps the global batch exact, and are at most
`train.max_micro_batch` when set. All ranks take the smallest size any of them found.
"""

import contextlib
import dataclasses
import math
import sys

import torch
import torch.distributed as dist

from harness.distributed import DistEnv
from harness.run_dir import RunDir
from harness.spec import Experiment, SpecError, read_spec, validate

CPU_FALLBACK = 8  # no memory to probe on CPU: a size that suits a CPU step


def candidates(sequences_per_rank: int) -> list[int]:
    """Micro-batch sizes that divide the per-rank sequences of a step, largest first."""
    return [b for b in range(sequences_per_rank, 0, -1) if sequences_per_rank % b == 0]


def choose_micro_batch(model: torch.nn.Module, batch_tokens: int, val_tokens: int, seq_len: int, env: DistEnv,
                       autocast: contextlib.AbstractContextManager, memory_fraction: float = 0.85,
                       max_micro_batch: int = 0) -> tuple[int, dict]:
    """The size, and what it was chosen from (for the run's log). Sizes divide the per-rank sequences of a
    training step and of a validation pass (if any), and are at most max_micro_batch (0: no cap)."""
    per_rank = batch_tokens // (seq_len * env.world_size)
    cap = max_micro_batch or per_rank
    sizes = [b for b in candidates(math.gcd(per_rank, val_tokens // (seq_len * env.world_size))) if b <= cap]
    if env.device.type != "cuda":
        chosen = next(b for b in sizes if b <= CPU_FALLBACK)
        if env.is_main:
            print(f"micro_batch=auto probes GPU memory; on {env.device.type} it falls back to {chosen} "
                  f"(the largest divisor of {per_rank} sequences per rank up to {min(cap, CPU_FALLBACK)})",
                  file=sys.stderr)
        return chosen, {"micro_batch": chosen, "device": env.device.type, "fallback": CPU_FALLBACK,
                        "max_micro_batch": max_micro_batch or None}
    total = torch.cuda.get_device_properties(env.device).total_memory
    optimizer_bytes = 2 * 4 * sum(p.numel() for p in model.parameters())
    budget = memory_fraction * total - optimizer_bytes
    chosen, peak, too_big = 0, None, []
    for b in sizes:
        ok, peak = _fits(model, b, seq_len, env.device, autocast, budget)
        if ok:
            chosen = b
            break
        too_big.append(b)
    if env.distributed:  # every rank must use the same size
        t = torch.tensor([chosen if chosen else per_rank + 1], device=env.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        chosen = int(t.item()) if int(t.item()) <= per_rank else 0
    if not chosen:
        raise RuntimeError(f"micro_batch=auto: not even one sequence of {seq_len} tokens fits in "
                           f"train.memory_fraction={memory_fraction} of GPU memory ({total / 1e9:.1f} GB)")
    gb = lambda x: None if x is None else round(x / 1e9, 3)
    info = {"micro_batch": chosen, "device": torch.cuda.get_device_name(env.device), "device_memory_gb": gb(total),
            "memory_fraction": memory_fraction, "budget_gb": gb(budget), "optimizer_gb": gb(optimizer_bytes),
            "peak_memory_gb": gb(peak), "too_big": too_big, "max_micro_batch": max_micro_batch or None}
    if env.is_main:
        print(f"micro_batch=auto: {chosen} sequences x {seq_len} tokens fit ({per_rank // chosen} micro-steps "
              f"per step; probe peak {info['peak_memory_gb']} GB + optimizer {info['optimizer_gb']} GB of "
              f"{memory_fraction:.0%} x {info['device_memory_gb']} GB); stored in the run's config.json",
              file=sys.stderr)
    return chosen, info


def _fits(model: torch.nn.Module, batch: int, seq_len: int, device: torch.device,
          autocast: contextlib.AbstractContextManager, budget: float) -> tuple[bool, float | None]:
    """Whether a training step at `batch` stays within `budget` bytes, and its measured peak (None: OOM)."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    peak = None
    try:
        x = torch.zeros((batch, seq_len), dtype=torch.long, device=device)  # values do not change memory use
        with autocast:
            _, loss = model(x, x)
        loss.backward()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    except torch.cuda.OutOfMemoryError:
        pass
    finally:
        model.zero_grad(set_to_none=True)
        loss = x = None
        torch.cuda.empty_cache()
    return peak is not None and peak <= budget, peak


def resolve_micro_batch(exp: Experiment, model: torch.nn.Module, run: RunDir, env: DistEnv,
                        autocast: contextlib.AbstractContextManager) -> tuple[Experiment, dict | None]:
    """`exp` with micro_batch="auto" replaced by a size, and what it was chosen from (for the start row):
    a resumed run reuses the size its config.json recorded; a new run (or a changed batch or world size)
    probes the GPU. Any other spec is returned as it is."""
    tc = exp.train
    if tc.micro_batch != "auto":
        return exp, None
    if run.exists() and (stored := read_spec(run).train.micro_batch) != "auto":
        chosen = dataclasses.replace(exp, train=dataclasses.replace(tc, micro_batch=stored))
        try:
            validate(chosen, env.world_size)
            return chosen, {"micro_batch": stored, "from": str(run.config)}
        except SpecError:
            pass  # the batch or world size changed since: probe again
    size, info = choose_micro_batch(model, tc.batch_tokens, exp.eval.val_tokens if exp.eval.val_every else
                                    tc.batch_tokens, tc.seq_len, env, autocast, tc.memory_fraction, tc.max_micro_batch)
    chosen = dataclasses.replace(exp, train=dataclasses.replace(tc, micro_batch=size))
    validate(chosen, env.world_size)
    return chosen, info
