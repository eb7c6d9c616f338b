"""The command line of harness.eval, apart from the code that runs it: harness.submit --eval checks an
evaluation's options with it before queueing, on a login node, without torch."""

import argparse

from harness.eval import registry
from harness.spec import EvalConfig

DESCRIPTION = "Evaluate a model outside the training loop (python -m harness.eval --help for the examples)."


def task_list(value: str) -> list[str]:
    """--tasks a,b,...: registry names (a suite name stands for its tasks)."""
    names = [t for t in value.split(",") if t]
    if problems := registry.check(names):
        raise argparse.ArgumentTypeError("; ".join(p.removeprefix("eval.tasks: ") for p in problems))
    return registry.expand(names)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.eval", description=DESCRIPTION,
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
