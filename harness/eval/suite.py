"""The zero-shot suite as one evaluation: every task scored, the suite average, bits per byte on the run's val
split, and the table a person reads (`python -m harness.eval suite`)."""

import contextlib
import statistics
import time
from pathlib import Path

import torch

from harness.data.manifest import load_manifest
from harness.data.reader import ShardedTokenReader
from harness.distributed import DistEnv
from harness.eval import registry
from harness.eval.choice import stderr
from harness.eval.val_loss import val_scores
from harness.records import headline

AVERAGE = "average of the tasks' headline (acc_norm where it exists, else acc)"


def score_tasks(model: torch.nn.Module, tasks: list[str], data: str | None, limit: int, env: DistEnv,
                precision: contextlib.AbstractContextManager, batch: int) -> dict[str, dict]:
    """Collective: each task's figures, {task: {examples, acc, acc_norm, acc_stderr, acc_norm_stderr, headline,
    seconds, examples_per_s}}."""
    out = {}
    for name in tasks:
        task, t0 = registry.get(name), time.time()
        figures = task.score(model, task.load(data, limit, env), env, precision, batch)
        seconds = time.time() - t0
        n, norm = figures["examples"], figures["acc_norm"]
        out[name] = figures | {"acc_stderr": stderr(figures["acc"], n),
                               "acc_norm_stderr": stderr(norm, n) if norm is not None else None,
                               "headline": headline(figures), "seconds": round(seconds, 3),
                               "examples_per_s": round(n / max(seconds, 1e-9), 2)}
    return out


def average(tasks: dict[str, dict]) -> float | None:
    """The suite average: the unweighted mean of the tasks' headline figures."""
    return statistics.fmean(t["headline"] for t in tasks.values()) if tasks else None


def val_bpb(model: torch.nn.Module, spec: dict | None, tokens: int, env: DistEnv,
            precision: contextlib.AbstractContextManager) -> dict | None:
    """Loss and bits per byte on the first `tokens` of the run's val split (rounded down to whole passes of
    8 sequences per rank), or None without a run spec or its data here."""
    if not spec or tokens <= 0:
        return None
    data = Path(spec["data"]["dir"])
    try:
        load_manifest(data)
    except ValueError:
        return None
    seq_len = min(model.config.block_size, 1024)
    reader = ShardedTokenReader(data, "val", batch_size=8, seq_len=seq_len, rank=env.rank,
                                world_size=env.world_size, device=env.device)
    tokens = min(tokens, reader.epoch_tokens - 1) // reader.tokens_per_step * reader.tokens_per_step
    if tokens == 0:
        return None
    return val_scores(model, reader, tokens, env, precision) | {"tokens": tokens, "data": str(data)}


def table(tasks: dict[str, dict], val: dict | None = None) -> str:
    """The suite as a table: task, examples, acc, acc_norm, their standard errors; the average; bits per byte."""
    def pct(x: float | None, err: float | None) -> str:
        return "-" if x is None else f"{100 * x:6.2f} ± {100 * err:5.2f}" if err is not None else f"{100 * x:6.2f}"

    lines = [f"{'task':15s} {'examples':>8s}  {'acc (%)':>15s}  {'acc_norm (%)':>15s}  {'examples/s':>10s}"]
    for name, t in tasks.items():
        lines.append(f"{name:15s} {t['examples']:8,d}  {pct(t['acc'], t['acc_stderr']):>15s}  "
                     f"{pct(t['acc_norm'], t['acc_norm_stderr']):>15s}  {t['examples_per_s']:10.1f}")
    if tasks:
        lines.append(f"{AVERAGE}: {100 * average(tasks):.2f}%")
    if val:
        lines.append(f"val split ({val['tokens']:,} tokens of {val['data']}): loss {val['loss']:.4f}, "
                     f"{val['bpb']:.4f} bits per byte")
    return "\n".join(lines)
