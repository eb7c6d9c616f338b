"""Mean loss over a fixed slice of the val split: the same tokens at every evaluation, whatever the run; and
bits per byte on the same tokens, which does not depend on the tokenizer (as OLMo and nanochat report it)."""

import contextlib
import functools
import math

import torch
from torch.nn import functional as F

from harness.data.reader import ShardedTokenReader
from harness.data.tokenizer import EOT, VOCAB_SIZE, gpt2_encoding
from harness.distributed import DistEnv, all_reduce_mean, all_reduce_sum


@functools.cache
def token_bytes() -> torch.Tensor:
    """UTF-8 bytes of each GPT-2 token id (0 for <|endoftext|>: it is no text, so bits per byte leaves it out)."""
    enc = gpt2_encoding()
    sizes = [len(enc.decode_single_token_bytes(i)) for i in range(VOCAB_SIZE)]
    sizes[EOT] = 0
    return torch.tensor(sizes, dtype=torch.float64)


@torch.no_grad()
def val_scores(model: torch.nn.Module, reader: ShardedTokenReader, tokens: int, env: DistEnv,
               autocast: contextlib.AbstractContextManager | None = None) -> dict:
    """{"loss": mean cross-entropy over the first `tokens` val tokens, "bpb": bits per byte of the same targets
    (<|endoftext|> left out)}; every rank reads its own share."""
    steps = tokens // reader.tokens_per_step
    if steps < 1 or steps * reader.tokens_per_step != tokens:
        raise ValueError(f"val tokens {tokens:,} is not a positive multiple of {reader.tokens_per_step:,} per step")
    was_training = model.training
    model.eval()
    reader.reset()
    sizes = token_bytes().to(reader.device)
    total = torch.zeros((), device=reader.device)
    nats_bytes = torch.zeros(2, dtype=torch.float64, device=reader.device)  # nats of text tokens, their bytes
    for _ in range(steps):
        x, y = reader.next_batch()
        with autocast or contextlib.nullcontext():
            logits, _ = model(x)
        ce = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.reshape(-1), reduction="none")
        total += ce.mean()
        # A padded vocabulary's ids never occur in the data, so indexing the 50,257 sizes is safe.
        b = sizes[y.reshape(-1)]
        nats_bytes += torch.stack([(ce.double() * (b > 0)).sum(), b.sum()])
    model.train(was_training)
    # Every rank scored the same number of tokens, so the mean of rank means is the global mean.
    loss = all_reduce_mean(total / steps, env).item()
    nats, n_bytes = all_reduce_sum(nats_bytes, env).tolist()
    return {"loss": loss, "bpb": nats / (math.log(2) * n_bytes) if n_bytes else None}


def val_loss(model: torch.nn.Module, reader: ShardedTokenReader, tokens: int, env: DistEnv,
             autocast: contextlib.AbstractContextManager | None = None) -> float:
    """Mean cross-entropy over the first `tokens` val tokens (`val_scores`' loss)."""
    return val_scores(model, reader, tokens, env, autocast)["loss"]
