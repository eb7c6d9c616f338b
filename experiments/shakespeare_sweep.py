"""A small sweep of the Shakespeare default: 2 learning rates x 3 seeds, short enough for 2 CPU cores.

    python -m harness.prepare shakespeare
    for i in 0 1 2 3 4 5; do python -m harness.train experiments/shakespeare_sweep.py --sweep-index $i; done
    python -m harness.status log/ --sort val_loss              # the sweep's status, best first
    python -m analysis.plots log/ --runs 'shakespeare-sweep-*' --out log/plots/sweep

What the README's sweep figure and status table show: runs coloured by the field the sweep varies
(optim.lr), each learning rate's three seeds as a mean with a band. Any sweep reads the same way:
analysis finds the swept fields from the configs (the fields that differ, seeds apart).
"""

import dataclasses
import pathlib
import runpy

base = runpy.run_path(str(pathlib.Path(__file__).with_name("shakespeare.py")))["spec"]

# 64 steps x 1,024 tokens = 65,536 tokens each (~1 min on one core); warmup 8, cosine to a tenth.
# Val every 16 steps (steps 0, 16, 32, 48, 64) on the same first 8,192 val tokens for every run.
LRS = (1e-3, 4e-3)  # half the default's 2e-3, and twice it
SEEDS = (1, 2, 3)

sweep = [
    dataclasses.replace(
        base, name=f"shakespeare-sweep-lr{lr:g}-seed{seed}", seed=seed,
        optim=dataclasses.replace(base.optim, lr=lr),
        schedule=dataclasses.replace(base.schedule, steps=64, warmup=8, min_lr=lr / 10),
        eval=dataclasses.replace(base.eval, val_every=16, val_tokens=8192, sample_every=64),
        checkpoint=dataclasses.replace(base.checkpoint, every=64),
    )
    for lr in LRS for seed in SEEDS
]
