"""Evaluate a model outside the training loop, as one process or under torchrun.

    python -m harness.eval --list                                           # the tasks
    python -m harness.eval suite log/gpt2-124m --data log/data/eval          # the zero-shot suite, a table
    python -m harness.eval suite path/to/hf-gpt2 --tasks hellaswag,piqa --limit 100 --json out.json
    python -m harness.eval hellaswag_nanogpt log/gpt2-124m                  # a run: its newest valid checkpoint
    python -m harness.eval hellaswag_nanogpt path/to/hf-gpt2 --data hellaswag_val.jsonl
    torchrun --nproc-per-node 8 -m harness.eval hellaswag_nanogpt log/gpt2-124m/checkpoints/step_00019000
    python -m harness.eval val-loss log/gpt2-124m --data log/data/fineweb10b --tokens 10485760

TARGET is a run directory, a checkpoint directory or a HuggingFace GPT-2 directory. Rank 0 prints
one JSON line (the suite: a table first) and writes the same JSON beside the weights it evaluated
(eval_TASK.json, eval_suite.json or eval_val_loss.json in the checkpoint or HuggingFace directory). A task
scored on a checkpoint of a run (each task of a suite) is also recorded in the run's metrics (an `eval` row of
that step, marked `later`), and the run's summary is rewritten.

This module is the command line alone, apart from the code that runs it: harness.submit --eval checks an
evaluation's options with it before queueing, on a login node, without torch.
"""

import argparse

from harness.eval import registry
from harness.spec import EvalConfig


def task_list(value: str) -> list[str]:
    """--tasks a,b,...: registry names (a suite name stands for its tasks)."""
    names = [t for t in value.split(",") if t]
    if problems := registry.check(names):
        raise argparse.ArgumentTypeError("; ".join(p.removeprefix("eval.tasks: ") for p in problems))
    return registry.expand(names)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the tasks and exit")
    sub = p.add_subparsers(dest="command", metavar=f"{{suite,{','.join(registry.names())},val-loss}}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("target", help="a run directory, a checkpoint directory or a HuggingFace GPT-2 directory")
    common.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    common.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="bfloat16: autocast, as in training (float32 reproduces published scores)")
    for name in registry.names():
        t = sub.add_parser(name, parents=[common], help=registry.TASKS[name][1])
        t.add_argument("--data", default=None, help="the task's data (default: its own place; see --list)")
        t.add_argument("--limit", type=int, default=0, help="only the first N examples (0: all)")
        t.add_argument("--batch", type=int, default=8, help="examples per forward pass")

    s = sub.add_parser("suite", parents=[common], help="the zero-shot suite, scored as lm-evaluation-harness 0.4.13 "
                       "scores it: a table, and bits per byte on the run's val split")
    s.add_argument("--data", default=None, help="the prepared eval data (python -m harness.prepare eval; "
                   "default log/data/eval)")
    s.add_argument("--tasks", type=task_list, default=list(registry.SUITES["suite"]),
                   help="comma-separated tasks (default: the ten of the suite)")
    s.add_argument("--limit", type=int, default=0, help="only the first N examples of each task, in the data's "
                   "order, as lm-eval's --limit (0: all)")
    s.add_argument("--batch", type=int, default=8, help="examples per forward pass")
    s.add_argument("--json", default=None, help="also write {task: {acc, acc_norm, examples, ...}} here")
    s.add_argument("--bpb-tokens", type=int, default=1_048_576,
                   help="val tokens for bits per byte when the source is a run whose data is here (0: skip)")

    v = sub.add_parser("val-loss", parents=[common], help="mean loss over a fixed number of val tokens")
    v.add_argument("--data", required=True, help="a prepared data directory (manifest.json and shards)")
    v.add_argument("--tokens", type=int, default=EvalConfig.val_tokens,
                   help="val tokens, rounded down to whole steps of batch*seq_len*ranks and to the split's size")
    v.add_argument("--batch", type=int, default=8, help="sequences per rank per forward pass")
    v.add_argument("--seq-len", type=int, default=0, help="tokens per sequence (0: min(block_size, 1024))")
    return p
