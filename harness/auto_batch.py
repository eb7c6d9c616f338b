"""micro_batch="auto": the largest micro-batch whose training step fits in GPU memory.

The probe runs a real forward and backward at each candidate size, largest first, and keeps the
first one whose peak memory plus the optimizer state still to come (AdamW: two fp32 moments per
parameter) stays under a safety margin of the device's memory. Candidates divide the sequences each
rank must process per step, so gradient accumulation keeps the global batch exact. All ranks take
the smallest size any of them found.
"""

import contextlib
import math
import sys

import torch
import torch.distributed as dist

from harness.distributed import DistEnv

SAFETY = 0.85  # use at most this fraction of the device's memory
CPU_FALLBACK = 8  # no memory to probe on CPU: a size that suits a CPU step


def candidates(sequences_per_rank: int) -> list[int]:
    """Micro-batch sizes that divide the per-rank sequences of a step, largest first."""
    return [b for b in range(sequences_per_rank, 0, -1) if sequences_per_rank % b == 0]


def choose_micro_batch(model: torch.nn.Module, batch_tokens: int, val_tokens: int, seq_len: int, env: DistEnv,
                       autocast: contextlib.AbstractContextManager) -> int:
    """Sizes divide the per-rank sequences of a training step and of a validation pass (if any)."""
    per_rank = batch_tokens // (seq_len * env.world_size)
    sizes = candidates(math.gcd(per_rank, val_tokens // (seq_len * env.world_size)))
    if env.device.type != "cuda":
        chosen = next(b for b in sizes if b <= CPU_FALLBACK)
        if env.is_main:
            print(f"micro_batch=auto probes GPU memory; on {env.device.type} it falls back to {chosen} "
                  f"(the largest divisor of {per_rank} sequences per rank up to {CPU_FALLBACK})", file=sys.stderr)
        return chosen
    total = torch.cuda.get_device_properties(env.device).total_memory
    optimizer_bytes = 2 * 4 * sum(p.numel() for p in model.parameters())
    chosen = 0
    for b in sizes:
        if _fits(model, b, seq_len, env.device, autocast, budget=SAFETY * total - optimizer_bytes):
            chosen = b
            break
    if env.distributed:  # every rank must use the same size
        t = torch.tensor([chosen if chosen else per_rank + 1], device=env.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        chosen = int(t.item()) if int(t.item()) <= per_rank else 0
    if not chosen:
        raise RuntimeError(f"micro_batch=auto: not even one sequence of {seq_len} tokens fits in GPU memory")
    if env.is_main:
        print(f"micro_batch=auto: {chosen} sequences x {seq_len} tokens fit ({per_rank // chosen} micro-steps "
              f"per step); stored in the run's config.json", file=sys.stderr)
    return chosen


def _fits(model: torch.nn.Module, batch: int, seq_len: int, device: torch.device,
          autocast: contextlib.AbstractContextManager, budget: float) -> bool:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        x = torch.zeros((batch, seq_len), dtype=torch.long, device=device)  # values do not change memory use
        with autocast:
            _, loss = model(x, x)
        loss.backward()
        torch.cuda.synchronize(device)
        ok = torch.cuda.max_memory_allocated(device) <= budget
    except torch.cuda.OutOfMemoryError:
        ok = False
    finally:
        model.zero_grad(set_to_none=True)
        loss = x = None
        torch.cuda.empty_cache()
    return ok
