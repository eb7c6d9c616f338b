"""Evaluate a model outside the training loop, as one process or under torchrun.

    python -m harness.eval --list                                           # the tasks
    python -m harness.eval hellaswag_nanogpt log/gpt2-124m                  # a run: its newest valid checkpoint
    python -m harness.eval hellaswag_nanogpt path/to/hf-gpt2 --data hellaswag_val.jsonl
    torchrun --nproc-per-node 8 -m harness.eval hellaswag_nanogpt log/gpt2-124m/checkpoints/step_00019000
    python -m harness.eval val-loss log/gpt2-124m --data log/data/fineweb10b --tokens 10485760

TARGET is a run directory, a checkpoint directory or a HuggingFace GPT-2 directory. Rank 0 prints
one JSON line and writes the same JSON beside the weights it evaluated (eval_TASK.json or
eval_val_loss.json in the checkpoint or HuggingFace directory). A task scored on a checkpoint of a run
is also recorded in the run's metrics (an `eval` row of that step, marked `later`), and the run's
summary is rewritten.

This module is the command line alone, apart from the code that runs it: harness.submit --eval checks an
evaluation's options with it before queueing, on a login node, without torch.
"""

import argparse

from harness.eval import registry
from harness.spec import EvalConfig


def parser() -> argparse.ArgumentParser:
    tasks = [*registry.names(), *registry.ALIASES]
    p = argparse.ArgumentParser(prog="python -m harness.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the tasks and exit")
    sub = p.add_subparsers(dest="command", metavar=f"{{{','.join(registry.names())},val-loss}}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("target", help="a run directory, a checkpoint directory or a HuggingFace GPT-2 directory")
    common.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    common.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="bfloat16: autocast, as in training (float32 reproduces published scores)")
    for name in tasks:
        t = sub.add_parser(name, parents=[common], help=registry.TASKS[registry.canonical(name)][1])
        t.add_argument("--data", default=None, help="the task's data (default: its own place; see --list)")
        t.add_argument("--limit", type=int, default=0, help="only the first N examples (0: all)")
        t.add_argument("--batch", type=int, default=8, help="examples per forward pass")

    v = sub.add_parser("val-loss", parents=[common], help="mean loss over a fixed number of val tokens")
    v.add_argument("--data", required=True, help="a prepared data directory (manifest.json and shards)")
    v.add_argument("--tokens", type=int, default=EvalConfig.val_tokens,
                   help="val tokens, rounded down to whole steps of batch*seq_len*ranks and to the split's size")
    v.add_argument("--batch", type=int, default=8, help="sequences per rank per forward pass")
    v.add_argument("--seq-len", type=int, default=0, help="tokens per sequence (0: min(block_size, 1024))")
    return p
