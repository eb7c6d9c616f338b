"""A learning-rate sweep of the Shakespeare default: three runs, submitted as one Slurm job array.

    python -m harness.submit experiments/shakespeare_lr_sweep.py       # 3 run dirs: log/shakespeare-lr*
    python -m analysis.plots log/ --runs 'shakespeare-lr*'              # the curves overlaid
"""

import dataclasses
import pathlib
import runpy

base = runpy.run_path(str(pathlib.Path(__file__).with_name("shakespeare.py")))["spec"]

sweep = [
    dataclasses.replace(base, name=f"shakespeare-lr{lr:g}", optim=dataclasses.replace(base.optim, lr=lr),
                        schedule=dataclasses.replace(base.schedule, min_lr=lr / 10))
    for lr in (1e-3, 3e-3, 1e-2)
]
