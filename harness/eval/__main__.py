"""`python -m harness.eval`: evaluate a model outside the training loop (the usage is harness/eval/cli.py's)."""

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from harness import distributed, records
from harness.atomic import write_text
from harness.data.manifest import DataError
from harness.data.reader import ShardedTokenReader
from harness.eval import registry
from harness.eval.cli import parser
from harness.eval.hellaswag import HellaSwagDataError
from harness.eval.val_loss import val_loss
from harness.model.gpt import autocast
from harness.model.io import load_model
from harness.model.sources import CheckpointError
from harness.run_dir import JsonlAppender, RunDir


def task_command(model: torch.nn.Module, args: argparse.Namespace, env: distributed.DistEnv,
                 precision: contextlib.AbstractContextManager) -> dict:
    task = registry.get(args.command)
    t0 = time.time()
    examples = task.load(args.data, args.limit, env)
    result = task.score(model, examples, env, precision, args.batch)
    seconds = time.time() - t0
    return {"task": task.name, **result, "seconds": round(seconds, 3),
            "examples_per_s": round(result["examples"] / max(seconds, 1e-9), 2), "data": args.data}


def val_loss_command(model: torch.nn.Module, args: argparse.Namespace, env: distributed.DistEnv,
                     precision: contextlib.AbstractContextManager) -> dict:
    seq_len = args.seq_len or min(model.config.block_size, 1024)
    reader = ShardedTokenReader(args.data, "val", batch_size=args.batch, seq_len=seq_len, rank=env.rank,
                                world_size=env.world_size, device=env.device)
    # Whole steps only, and within the split: each step reads one token past its batch (the last
    # target), and a longer request would wrap around and count tokens twice.
    tokens = min(args.tokens, reader.epoch_tokens - 1) // reader.tokens_per_step * reader.tokens_per_step
    if tokens == 0:
        raise ValueError(f"{args.data}: the val split ({reader.epoch_tokens:,} tokens) is smaller than one step "
                         f"of {reader.tokens_per_step:,} tokens; lower --batch or --seq-len")
    t0 = time.time()
    loss = val_loss(model, reader, tokens, env, precision)
    return {"val_loss": loss, "tokens": tokens, "batch": args.batch, "seq_len": seq_len,
            "seconds": round(time.time() - t0, 3), "data": str(args.data)}


def record_in_run(checkpoint: Path, result: dict) -> None:
    """A task scored on a checkpoint of a run: an `eval` row of that step in the run's records (marked
    `later`), and the run's summary rewritten from them."""
    run = RunDir(checkpoint.parent.parent)
    if not run.exists() or run.checkpoints != checkpoint.parent:
        return
    rows = records.read(run)
    starts = [r for r in rows if r["kind"] == "start"]
    batch = starts[-1]["batch_tokens"] if starts and starts[-1].get("batch_tokens") else run.spec_dict()["train"][
        "batch_tokens"]
    step = int(result["step"])
    row = records.Eval(step=step, tokens=step * batch, task=result["task"], examples=result["examples"],
                       acc=result["acc"], acc_norm=result.get("acc_norm"), seconds=result["seconds"], later=True)
    out = JsonlAppender(run.metrics)
    try:
        out.write(records.as_dict(row, restart=max(0, len(starts) - 1)))
        out.sync()
    finally:
        out.close()
    records.refresh_summary(run)


@record  # under torchrun, the first failing rank's traceback heads the job's error report
def main(argv: list[str] | None = None) -> dict | None:
    args = parser().parse_args(argv)
    if args.list:
        for name, (_, what) in registry.TASKS.items():
            print(f"{name:20s} {what}")
        return None
    if not args.command:
        parser().error("name a task (--list) or val-loss")
    is_task = args.command != "val-loss"
    env = distributed.setup(args.device)
    precision = autocast(env.device, args.dtype)
    try:
        model, info = load_model(args.target, env.device)
        result = (task_command if is_task else val_loss_command)(model, args, env, precision)
    except (CheckpointError, DataError, HellaSwagDataError, FileNotFoundError, ValueError) as e:
        # Every rank meets the same bad input, so none is left waiting in a collective.
        sys.exit(f"error: {e}")
    result |= {"target": str(args.target), "step": info["step"], "model": info["source"], "path": info["path"],
               "world_size": env.world_size}
    if env.is_main:
        print(json.dumps(result), flush=True)
        name = f"eval_{result['task']}.json" if is_task else "eval_val_loss.json"
        write_text(Path(info["path"]) / name, json.dumps(result, indent=1) + "\n")
        if is_task and info["source"] == "checkpoint":
            record_in_run(Path(info["path"]), result)
    del model
    distributed.teardown(env)
    return result


if __name__ == "__main__":
    main()
