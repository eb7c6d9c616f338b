"""Zero-shot multiple choice scored exactly as lm-evaluation-harness 0.4.13 scores it (its `multiple_choice`
output type and HuggingFace backend), so that a figure here stands beside a published table.

Each task (harness/eval/tasks/) turns a row of its data into one `Example`: a (context, continuation) pair per
choice, the choice strings, the gold index. Then, as lm-eval does it:

- A pair is tokenised whole: trailing whitespace of the context moves to the continuation, the context +
  continuation string is encoded once, and the continuation's tokens are what follows the context's own
  encoding (a BPE merge across the boundary stays as the tokeniser makes it).
- Too long for the model's context (block_size + 1 tokens, the last only a target), a sequence keeps its
  last tokens.
- A choice's log-likelihood is the sum of its continuation tokens' log-probabilities over the tokeniser's
  50,257 ids (a padded vocabulary's extra rows take no part: the exported model has none).
- acc: the gold choice has the highest log-likelihood (the first, on a tie); acc_norm: the same after
  dividing each by its choice's length in characters (not tokens), where lm-eval reports it.

Scoring is batched across examples: all pairs of a rank's share are sorted by length (little padding) and a
forward pass takes many at once; the head is applied only at the scored positions.
"""

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn import functional as F

from harness.data.eval_data import read_rows
from harness.data.manifest import DataError
from harness.data.tokenizer import VOCAB_SIZE, gpt2_encoding
from harness.distributed import DistEnv
from harness.eval.registry import Task


@dataclass(frozen=True)
class Example:
    requests: list[tuple[str, str]]  # (context, continuation) for each choice: lm-eval's loglikelihood requests
    choices: list[str]  # the choices as lm-eval's doc_to_choice gives them: acc_norm divides by their lengths
    gold: int


def encode_pair(context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation tokens, split where lm-eval's HuggingFace backend splits them."""
    enc = gpt2_encoding()
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    # allowed_special: a HuggingFace tokenizer reads "<|endoftext|>" in text as the special token; so do we.
    whole = enc.encode(context + continuation, allowed_special="all")
    ctx = enc.encode(context, allowed_special="all")
    return ctx, whole[len(ctx):]


def _window(ctx: list[int], cont: list[int], block_size: int) -> tuple[list[int], list[int]]:
    """Model input and the targets of its last positions (the continuation, cut to fit)."""
    tokens = (ctx + cont)[-(block_size + 1):]
    n = min(len(cont), len(tokens) - 1)
    return tokens[:-1], tokens[len(tokens) - n:]


@torch.no_grad()
def loglikelihoods(model: torch.nn.Module, examples: list[Example], batch: int = 8,
                   autocast: contextlib.AbstractContextManager | None = None) -> list[list[float]]:
    """Each example's log-likelihood of each choice. A forward pass takes `batch` x 4 sequences."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    block, device = model.config.block_size, next(model.parameters()).device
    rows = [(i, j, *_window(*encode_pair(c, x), block)) for i, ex in enumerate(examples)
            for j, (c, x) in enumerate(ex.requests)]
    rows.sort(key=lambda r: -len(r[2]))  # longest first, as lm-eval: each pass pads to its first row
    out = [[0.0] * len(ex.requests) for ex in examples]
    head = model.lm_head.weight[:VOCAB_SIZE]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch * 4):
            chunk = rows[start:start + batch * 4]
            x = torch.zeros(len(chunk), len(chunk[0][2]), dtype=torch.long)
            for k, (_, _, inp, _) in enumerate(chunk):
                x[k, :len(inp)] = torch.tensor(inp)  # right padding: a causal model's earlier positions ignore it
            # The positions that predict each continuation: the last len(targets) of the row's own input.
            r = torch.tensor([k for k, (_, _, inp, t) in enumerate(chunk) for _ in t])
            c = torch.tensor([p for _, _, inp, t in chunk for p in range(len(inp) - len(t), len(inp))])
            y = torch.tensor([tok for *_, t in chunk for tok in t])
            with autocast or contextlib.nullcontext():
                h = model.hidden(x.to(device))[r.to(device), c.to(device)]
                logits = F.linear(h, head)
            logp = F.log_softmax(logits.float(), dim=-1).gather(1, y.to(device)[:, None])[:, 0]
            sums = torch.zeros(len(chunk), dtype=torch.float64, device=device).index_add_(0, r.to(device),
                                                                                        logp.double())
            for (i, j, _, _), s in zip(chunk, sums.tolist(), strict=True):
                out[i][j] = s
    finally:
        model.train(was_training)
    return out


def predictions(lls: list[float], ex: Example) -> tuple[int, int]:
    """The choice by log-likelihood and by log-likelihood per character (the first on a tie, as numpy's argmax)."""
    pred = max(range(len(lls)), key=lambda k: lls[k])
    pred_norm = max(range(len(lls)), key=lambda k: lls[k] / len(ex.choices[k]))
    return pred, pred_norm


def stderr(acc: float, n: int) -> float | None:
    """lm-eval's standard error of a mean of 0/1 scores: sample standard deviation / sqrt(n)."""
    return math.sqrt(acc * (1 - acc) / (n - 1)) if n > 1 else None


@dataclass(frozen=True)
class Definition:
    """One task: its name, its file in the prepared eval data, whether lm-eval reports acc_norm for it, and
    how a row becomes an Example."""

    name: str
    file: str
    norm: bool
    example: Callable[[dict], Example]

    def load(self, data: str | None, limit: int, env: DistEnv | None = None) -> list[Example]:
        rows = read_rows(data, self.file, limit)
        examples = []
        for i, row in enumerate(rows, 1):
            try:
                examples.append(self.example(row))
            except (KeyError, ValueError, IndexError, TypeError) as e:
                raise DataError(f"{data or 'log/data/eval'}/{self.file}.jsonl: row {i}: {type(e).__name__}: {e}"
                                ) from None
        return examples

    def score(self, model: torch.nn.Module, examples: list[Example], env: DistEnv,
              autocast: contextlib.AbstractContextManager | None = None, batch: int = 8) -> dict:
        """Collective: rank r scores examples r, r+W, ...; {"examples", "acc", "acc_norm"} over all of them."""
        mine = examples[env.rank::env.world_size]
        correct = correct_norm = 0
        for lls, ex in zip(loglikelihoods(model, mine, batch, autocast), mine, strict=True):
            pred, pred_norm = predictions(lls, ex)
            correct, correct_norm = correct + (pred == ex.gold), correct_norm + (pred_norm == ex.gold)
        counts = torch.tensor([correct, correct_norm, len(mine)], dtype=torch.int64)
        if env.distributed:
            dist.all_reduce(counts, group=env.cpu_group)
        correct, correct_norm, n = counts.tolist()
        return {"examples": n, "acc": correct / max(n, 1), "acc_norm": correct_norm / max(n, 1) if self.norm else None}

    def task(self) -> Task:
        return Task(self.name, load=self.load, score=self.score)
