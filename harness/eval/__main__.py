"""`python -m harness.eval`: evaluate a model outside the training loop (the usage is harness/eval/cli.py's)."""

import argparse
import contextlib
import fcntl
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
from harness.eval.suite import average, score_tasks, table, val_bpb
from harness.eval.val_loss import val_scores
from harness.model.gpt import autocast
from harness.model.io import load_model
from harness.model.sources import CheckpointError, read_meta
from harness.run_dir import JsonlAppender, RunDir


def task_command(model: torch.nn.Module, info: dict, args: argparse.Namespace, env: distributed.DistEnv,
                 precision: contextlib.AbstractContextManager) -> dict:
    task = registry.get(args.command)
    t0 = time.time()
    examples = task.load(args.data, args.limit, env)
    result = task.score(model, examples, env, precision, args.batch)
    seconds = time.time() - t0
    return {"task": task.name, **result, "seconds": round(seconds, 3),
            "examples_per_s": round(result["examples"] / max(seconds, 1e-9), 2), "data": args.data}


def suite_command(model: torch.nn.Module, info: dict, args: argparse.Namespace, env: distributed.DistEnv,
                  precision: contextlib.AbstractContextManager) -> dict:
    t0 = time.time()
    tasks = score_tasks(model, args.tasks, args.data, args.limit, env, precision, args.batch)
    spec = read_meta(Path(info["path"]))["spec"] if info["source"] == "checkpoint" else None
    val = val_bpb(model, spec, args.bpb_tokens, env, precision)
    return {"task": "suite", "tasks": tasks, "average": average(tasks), "val": val, "data": args.data,
            "limit": args.limit, "seconds": round(time.time() - t0, 3)}


def val_loss_command(model: torch.nn.Module, info: dict, args: argparse.Namespace, env: distributed.DistEnv,
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
    scores = val_scores(model, reader, tokens, env, precision)
    return {"val_loss": scores["loss"], "bpb": scores["bpb"], "tokens": tokens, "batch": args.batch,
            "seq_len": seq_len, "seconds": round(time.time() - t0, 3), "data": str(args.data)}


def eval_rows(result: dict) -> list[dict]:
    """A task's result, or each task of a suite's, as the fields of an `eval` row."""
    tasks = result["tasks"] if result["task"] == "suite" else {result["task"]: result}
    return [{"task": name, "examples": t["examples"], "acc": t["acc"], "acc_norm": t.get("acc_norm"),
             "seconds": t["seconds"]} for name, t in tasks.items()]


def record_in_run(checkpoint: Path, result: dict) -> None:
    """Tasks scored on a checkpoint of a run: an `eval` row each, of that step, in the run's records (marked
    `later`), and the run's summary rewritten from them."""
    run = RunDir(checkpoint.parent.parent)
    if not run.exists() or run.checkpoints != checkpoint.parent:
        return
    rows = records.read(run)
    starts = [r for r in rows if r["kind"] == "start"]
    batch = starts[-1]["batch_tokens"] if starts and starts[-1].get("batch_tokens") else run.spec_dict()["train"][
        "batch_tokens"]
    step = int(result["step"])
    # The tasks of a job array (--every-checkpoint) finish at about the same time: one at a time appends its rows
    # and rewrites the summary from all of them, so that no summary misses another's rows.
    with open(run.metrics, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = JsonlAppender(run.metrics)
        try:
            for fields in eval_rows(result):
                out.write(records.as_dict(records.Eval(step=step, tokens=step * batch, **fields, later=True),
                                          restart=max(0, len(starts) - 1)))
            out.sync()
        finally:
            out.close()
        records.refresh_summary(run)


COMMANDS = {"suite": suite_command, "val-loss": val_loss_command}


def publish(result: dict, info: dict, args: argparse.Namespace) -> None:
    """Rank 0: print the result, write it beside the weights (and --json), record it in the run."""
    if args.command == "suite":
        print(table(result["tasks"], result["val"]), flush=True)
        if args.json:
            write_text(Path(args.json), json.dumps(result["tasks"], indent=1) + "\n")
    print(json.dumps(result), flush=True)
    name = "eval_val_loss.json" if args.command == "val-loss" else f"eval_{result['task']}.json"
    write_text(Path(info["path"]) / name, json.dumps(result, indent=1) + "\n")
    if args.command != "val-loss" and info["source"] == "checkpoint":
        record_in_run(Path(info["path"]), result)


@record  # under torchrun, the first failing rank's traceback heads the job's error report
def main(argv: list[str] | None = None) -> dict | None:
    args = parser().parse_args(argv)
    if args.list:
        for name, (_, what) in registry.TASKS.items():
            print(f"{name:20s} {what}")
        for name, tasks in registry.SUITES.items():
            print(f"{name:20s} the zero-shot suite: {', '.join(tasks)}")
        return None
    if not args.command:
        parser().error("name a task (--list), suite or val-loss")
    env = distributed.setup(args.device)
    precision = autocast(env.device, args.dtype)
    try:
        model, info = load_model(args.target, env.device)
        result = COMMANDS.get(args.command, task_command)(model, info, args, env, precision)
    except (CheckpointError, DataError, HellaSwagDataError, FileNotFoundError, ValueError) as e:
        # Every rank meets the same bad input, so none is left waiting in a collective.
        sys.exit(f"error: {e}")
    result |= {"target": str(args.target), "step": info["step"], "model": info["source"], "path": info["path"],
               "world_size": env.world_size}
    if env.is_main:
        publish(result, info, args)
    del model
    distributed.teardown(env)
    return result


if __name__ == "__main__":
    main()
