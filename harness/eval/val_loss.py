"""Mean loss over a fixed slice of the val split: the same tokens at every evaluation, whatever the run."""

import contextlib

import torch

from harness.data.reader import ShardedTokenReader
from harness.distributed import DistEnv, all_reduce_mean


@torch.no_grad()
def val_loss(model: torch.nn.Module, reader: ShardedTokenReader, tokens: int, env: DistEnv,
             autocast: contextlib.AbstractContextManager | None = None) -> float:
    """Mean cross-entropy over the first `tokens` val tokens; every rank reads its own share."""
    steps = tokens // reader.tokens_per_step
    if steps < 1 or steps * reader.tokens_per_step != tokens:
        raise ValueError(f"val tokens {tokens:,} is not a positive multiple of {reader.tokens_per_step:,} per step")
    was_training = model.training
    model.eval()
    reader.reset()
    total = torch.zeros((), device=reader.device)
    for _ in range(steps):
        x, y = reader.next_batch()
        with autocast or contextlib.nullcontext():
            _, loss = model(x, y)
        total += loss.float()
    model.train(was_training)
    # Every rank scored the same number of tokens, so the mean of rank means is the global mean.
    return all_reduce_mean(total / steps, env).item()
