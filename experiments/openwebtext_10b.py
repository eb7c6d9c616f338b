"""GPT-2 124M on 10B OpenWebText tokens: the OpenWebText recipe cut to FineWeb-10B's budget.

    python -m harness.submit experiments/openwebtext_10b.py

10e9 / 491,520 tokens/step = 20,345 steps (~1.1 epochs); the cosine reaches 6e-5 at the last step.
"""

import dataclasses
import pathlib
import runpy

base = runpy.run_path(str(pathlib.Path(__file__).with_name("openwebtext.py")))["spec"]

spec = dataclasses.replace(
    base,
    name="openwebtext_10b",
    schedule=dataclasses.replace(base.schedule, steps=20_345, warmup=715),
    eval=dataclasses.replace(base.eval, val_every=250, tasks_every=250, sample_every=1000),
    checkpoint=dataclasses.replace(base.checkpoint, every=1000, permanent_every=5000),
    cluster=dataclasses.replace(base.cluster, time_min=4 * 60),
)
