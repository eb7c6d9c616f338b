"""Evaluate a model outside the training loop, as one process or under torchrun.

    python -m harness.eval hellaswag log/gpt2-124m                      # a run: its newest valid checkpoint
    python -m harness.eval hellaswag path/to/hf-gpt2 --data hellaswag_val.jsonl
    torchrun --nproc-per-node 8 -m harness.eval hellaswag log/gpt2-124m/checkpoints/step_00019000
    python -m harness.eval val-loss log/gpt2-124m --data log/data/fineweb10b --tokens 10485760

TARGET is a run directory, a checkpoint directory or a HuggingFace GPT-2 directory. Rank 0 prints
one JSON line and writes the same JSON beside the weights it evaluated (eval_hellaswag.json or
eval_val_loss.json in the checkpoint or HuggingFace directory).
"""

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from harness import distributed
from harness.atomic import write_text
from harness.checkpoint import CheckpointError, load_model
from harness.data import DataError, ShardedTokenReader
from harness.eval import EvalConfig
from harness.eval.hellaswag import HellaSwagDataError, cache_file, evaluate_hellaswag
from harness.eval.val_loss import val_loss
from harness.model import autocast


def hellaswag(model: torch.nn.Module, args: argparse.Namespace, env: distributed.DistEnv,
              precision: contextlib.AbstractContextManager) -> dict:
    t0 = time.time()
    result = evaluate_hellaswag(model, args.data, args.limit, env, precision, batch_examples=args.batch)
    seconds = time.time() - t0
    return result | {"seconds": round(seconds, 3), "examples_per_s": round(result["n"] / max(seconds, 1e-9), 2),
                     "data": args.data or str(cache_file())}


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


COMMANDS = {"hellaswag": (hellaswag, "eval_hellaswag.json"), "val-loss": (val_loss_command, "eval_val_loss.json")}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("target", help="a run directory, a checkpoint directory or a HuggingFace GPT-2 directory")
    common.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    common.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="bfloat16: autocast, as in training (float32 reproduces the published GPT-2 scores)")

    h = sub.add_parser("hellaswag", parents=[common], help="HellaSwag accuracy (completion style)")
    h.add_argument("--data", default=None,
                   help=f"hellaswag_val.jsonl or a datasets.save_to_disk directory (default: {cache_file()}, "
                        "downloaded if missing)")
    h.add_argument("--limit", type=int, default=0, help="only the first N examples (0: all 10,042)")
    h.add_argument("--batch", type=int, default=8, help="examples per forward pass (4 sequences each)")

    v = sub.add_parser("val-loss", parents=[common], help="mean loss over a fixed number of val tokens")
    v.add_argument("--data", required=True, help="a prepared data directory (manifest.json and shards)")
    v.add_argument("--tokens", type=int, default=EvalConfig.val_tokens,
                   help="val tokens, rounded down to whole steps of batch*seq_len*ranks and to the split's size")
    v.add_argument("--batch", type=int, default=8, help="sequences per rank per forward pass")
    v.add_argument("--seq-len", type=int, default=0, help="tokens per sequence (0: min(block_size, 1024))")
    return p


@record  # under torchrun, the first failing rank's traceback heads the job's error report
def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    run, filename = COMMANDS[args.command]
    env = distributed.setup(args.device)
    precision = autocast(env.device, args.dtype)
    try:
        model, info = load_model(args.target, env.device)
        result = run(model, args, env, precision)
    except (CheckpointError, DataError, HellaSwagDataError, FileNotFoundError, ValueError) as e:
        # Every rank meets the same bad input, so none is left waiting in a collective.
        sys.exit(f"error: {e}")
    result |= {"target": str(args.target), "step": info["step"], "model": info["source"], "path": info["path"],
               "world_size": env.world_size}
    if env.is_main:
        print(json.dumps(result), flush=True)
        write_text(Path(info["path"]) / filename, json.dumps(result, indent=1) + "\n")
    del model
    distributed.teardown(env)
    return result


if __name__ == "__main__":
    main()
