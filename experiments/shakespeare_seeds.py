"""Five seeds of a shortened Shakespeare default: how far apart two runs land by chance alone.

    python -m harness.prepare shakespeare
    for i in 0 1 2 3 4; do python -m harness.train experiments/shakespeare_seeds.py --sweep-index $i; done
    python -m analysis.compare log/ --runs 'shakespeare-seed*'   # mean val curve, 95% band, spread of the final loss

The seed sets the initialisation, the shard order of each epoch and the samples; everything else is
the default experiment's. 192 steps stay inside the first epoch, whose order is a permutation of the
shards: with the default one-shard preparation every seed reads the same tokens, so the spread is the
initialisation's alone (prepare with `--shard-tokens 200000`, 7 shards, to vary the order too).
"""

import dataclasses
import pathlib
import runpy

base = runpy.run_path(str(pathlib.Path(__file__).with_name("shakespeare.py")))["spec"]

# 192 steps x 1,024 tokens = 196,608 tokens, a third of the default's 576: ~2 min per seed on 2 cores,
# ~11 min for all five one after another. Warmup 30 and cosine to 2e-4 as in the default (over 162 steps).
schedule = dataclasses.replace(base.schedule, steps=192)
# Val every 48 steps: 5 points (steps 0, 48, 96, 144, 192), on the same first 32,768 val tokens for
# every seed (the val reader is never shuffled), so the seeds' curves match token for token.
# One sample at the end, for the report.
evaluation = dataclasses.replace(base.eval, val_every=48, sample_every=192)
# One checkpoint, at the end (7.2M parameters + AdamW moments: ~90 MB per seed).
checkpoint = dataclasses.replace(base.checkpoint, every=192)

# Five seeds: the 95% interval of a mean is mean +- t(0.975, n-1) s / sqrt(n) = +-1.24 s at n=5,
# against +-2.48 s at n=3: half as wide for 5/3 of the compute.
SEEDS = (1, 2, 3, 4, 5)

sweep = [
    dataclasses.replace(base, name=f"shakespeare-seed{seed}", seed=seed, schedule=schedule, eval=evaluation,
                        checkpoint=checkpoint)
    for seed in SEEDS
]
