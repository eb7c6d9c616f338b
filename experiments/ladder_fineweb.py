"""A model ladder on FineWeb-Edu for GPUs: 5 sizes up to GPT-2 124M's shape x 4 token budgets, one GPU a run, for
a scaling-law fit that predicts the largest size from the four smaller ones.

    python -m harness.prepare fineweb-edu-10b
    python -m analysis.ladder experiments/ladder_fineweb.py --tokens-per-s 4e5   # the plan, at ~one H100's speed
    python -m harness.submit experiments/ladder_fineweb.py    # 5 trunks as a job array; they queue their branches
    python -m analysis.scaling log/ladder_fineweb --holdout

Sizes (nanochat's rule: depth L, width 64 L, 64-wide heads): L = 4, 6, 8, 10, 12, so N = 3.2M, 10.6M, 25.2M,
49.2M and 85.1M non-embedding parameters (the last is GPT-2 124M's shape: its 124M less the 38.6M of the
50,304 x 768 token table and the 0.8M of the position table). Budgets: 5, 10, 20 and 40 tokens per
non-embedding parameter, bracketing Chinchilla's ~20; the largest is 3.4B tokens, a third of the 9.9B
training tokens (no repetition). Each size trains one constant-rate trunk to 80% of its largest budget and a
cooldown branch from 80% of each budget (linear to a tenth over the last 20%): 8.1B tokens and 5.3e18 FLOPs
in all (the plan prints them); at an assumed 400K tokens/s per H100, 5.7 GPU-hours (not measured).

Rules: batch 2^16 tokens below 5M parameters, 2^17 below 20M, 2^18 below 60M, 2^19 (GPT-2's) above: at least
240 steps in every smallest budget; lr = 6e-4 x (N / 85.1M)^(-1/3) (GPT-2 124M's rate at its N, OLMo's size rule)
at 2^19 tokens per step, scaled to the size's batch by optim.lr_scaling="sqrt"; warmup a tenth of the
smallest budget. Validation: 4,194,304 tokens at the end of each branch. Not run from this repository yet.
"""

import dataclasses
import pathlib
import runpy

from harness.spec import CheckpointConfig, ClusterConfig, EvalConfig, LogConfig, OptimConfig
from harness.spec.ladder import Ladder, params

gpt2 = runpy.run_path(str(pathlib.Path(__file__).with_name("fineweb_10b.py")))["spec"]

base = dataclasses.replace(
    gpt2,
    # One GPU a run: the largest micro-batch that fits, up to 64 x 1,024 tokens.
    train=dataclasses.replace(gpt2.train, micro_batch="auto", max_micro_batch=64),
    optim=OptimConfig(lr=6e-4, weight_decay=0.1, lr_scaling="sqrt", base_batch_tokens=524_288),
    eval=EvalConfig(val_every=0, val_tokens=4_194_304, tasks=[], sample_every=0),
    # Trunks save every 500 steps and keep their branch points for good.
    checkpoint=CheckpointConfig(every=500, keep=2, async_save=True),
    log=LogConfig(every=10),
    cluster=ClusterConfig(nodes=1, gpus_per_node=1, cpus_per_task=16, time_min=4 * 60),
)


def batch_tokens(n: int) -> int:
    return 2**16 if n < 5e6 else 2**17 if n < 20e6 else 2**18 if n < 60e6 else 2**19


ladder = Ladder(
    name="ladder_fineweb",
    base=base,
    shapes=[(depth, depth, 64 * depth) for depth in (4, 6, 8, 10, 12)],  # (n_layer, n_head, n_embd)
    multiples=[5, 10, 20, 40],
    lr_ref=6e-4, n_ref=params(12, 768),  # GPT-2 124M: 6e-4 at 2^19 tokens/step
    batch_tokens=batch_tokens,
    cooldown=0.2,
)

sweep = ladder.specs()  # 5 trunks, then 20 branches
