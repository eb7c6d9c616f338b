"""The plan of a model ladder (harness.spec.ladder) before anything runs: each size's N, FLOPs per token, batch,
learning rate and budgets (tokens, steps, where each branch starts, epochs of the data), what the whole ladder
trains, and the commands that run it here, two runs at a time.

    python -m analysis.ladder experiments/ladder_shakespeare.py
    python -m analysis.ladder experiments/ladder_fineweb.py --tokens-per-s 2.5e6   # the time at that speed
"""

import argparse
import runpy
import sys
from pathlib import Path

from analysis.plots import duration
from harness.data.manifest import DataError, load_manifest
from harness.spec import resolve
from harness.spec.ladder import Ladder


def plan(ladder: Ladder, train_tokens: int | None) -> str:
    head = ["size", "N (non-embedding)", "MFLOP/token", "batch", "peak lr", "warmup", "budget", "tokens", "steps",
            "branch at", "decay", "epochs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ladder.rungs:
        spec = resolve(ladder.sized(r, "plan", 1, 0))
        for m, steps, decay in r.budgets:
            tokens = steps * r.batch_tokens
            epochs = f"{tokens / train_tokens:.2f}" if train_tokens else "-"
            cells = [r.label, f"{r.params:,}", f"{r.flops_per_token / 1e6:.1f}", f"{r.batch_tokens:,}",
                     f"{spec.optim.scaled_lr:.3g}", str(r.warmup), f"{m:g} N", f"{tokens:,}", f"{steps:,}",
                     f"{steps - decay:,}", f"{decay:,}", epochs]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m analysis.ladder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="an experiment file that defines `ladder = Ladder(...)`")
    p.add_argument("--tokens-per-s", type=float, default=2600.0,
                   help="training speed for the time estimate (default 2,600: two one-thread runs of the CPU ladder "
                        "on 2 idle cores, each 1,300-1,370 tokens/s as measured on the development machine)")
    args = p.parse_args(argv)
    ladder = runpy.run_path(str(args.file)).get("ladder")
    if not isinstance(ladder, Ladder):
        sys.exit(f"error: {args.file} defines no `ladder = Ladder(...)`")
    try:
        train_tokens = load_manifest(ladder.base.data.dir)["splits"]["train"]["tokens"]
    except (DataError, KeyError):
        train_tokens = None  # not prepared here: epochs unknown
    tokens, flops = ladder.cost()
    trunks, runs = len(ladder.rungs), len(ladder.specs())
    print(plan(ladder, train_tokens))
    data = f"{train_tokens:,} training tokens in {ladder.base.data.dir}" if train_tokens else \
        f"{ladder.base.data.dir} is not prepared here (epochs unknown)"
    print(f"\n{trunks} trunks and {runs - trunks} branches train {tokens:,} tokens ({flops:.3g} FLOPs); {data}; at "
          f"{args.tokens_per_s:,.0f} tokens/s about {duration(tokens / args.tokens_per_s)}")
    file, last = args.file, runs - 1
    if ladder.base.cluster.gpus_per_node == 0:  # CPU runs: two one-thread runs at a time use 2 cores best
        print(f"\nhere, two at a time, the trunks first, the largest (the longest) first of all:\n"
              f"  seq {trunks - 1} -1 0 | xargs -P 2 -I{{}} env OMP_NUM_THREADS=1 python -m harness.train {file} "
              "--sweep-index {}\n"
              f"  seq {trunks} {last} | xargs -P 2 -I{{}} env OMP_NUM_THREADS=1 python -m harness.train {file} "
              "--sweep-index {}")
    else:
        print(f"\non one machine, in order (the trunks first): for i in $(seq 0 {last}); do python -m harness.train "
              f"{file} --sweep-index $i; done")
    print(f"on Slurm (the trunks queue their branches): python -m harness.submit {file}\n"
          f"then: python -m analysis.scaling {ladder.root}/{ladder.name} --holdout")

if __name__ == "__main__":
    main()
