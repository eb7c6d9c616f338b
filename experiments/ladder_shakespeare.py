"""A model ladder on 2 CPU cores: 4 sizes x 5 token budgets in about an hour, for a scaling-law fit that predicts
the largest size from the three smaller ones.

    python -m analysis.ladder experiments/ladder_shakespeare.py        # the plan, its cost, the commands
    python -m harness.submit experiments/ladder_shakespeare.py         # on a CPU Slurm cluster: trunks queue branches
    python -m analysis.scaling log/ladder_shakespeare --holdout         # fit 3 sizes, predict the 4th

Sizes (the width rule, at depth 2, 8-wide heads): n_embd 16, 24, 32, 48, so N = 6,592, 14,496, 25,472 and
56,640 non-embedding parameters (each rung ~2x the last). With GPT-2's 50,304-row table the output layer is
nearly all the compute (at n_embd=48: 6 x 50,304 x 48 = 14.5 of the 15.0 MFLOP per token) and a step costs
about the same at every width (the 50,304-wide softmax is memory-bound), so the ladder's cost is its tokens.
Budgets: 2 to 32 tokens per non-embedding parameter, around Chinchilla's ~20 (not 20 x the embedding-heavy
total, which would be 16M-50M tokens a run); the largest, 1.8M tokens, is 1.3 epochs of the 1.41M training
tokens (the data repeats: stay within a few). Each size trains one constant-rate trunk to 80% of its largest
budget; each budget is a cooldown branch from the trunk's checkpoint at 80% of it, decaying linearly to a
tenth over the last 20%. The ladder trains 3.92M tokens in all (the plan prints it): measured here, a run
costs ~1.3 ms of one core per token, so two one-thread runs at a time take about 45 minutes, plus start-ups.

Rules: batch 512 tokens (2 x 128, two passes), 256 below 10K parameters, so every smallest budget has 50
steps or more; lr = 2e-3 x (N / 793,344)^(-1/3) (the default experiment's 2e-3 at its N, scaled by OLMo's
size rule) at 1,024 tokens per step, scaled to the batch by optim.lr_scaling="sqrt"; warmup a tenth of the
size's smallest budget. Validation: 32,768 tokens at the end of each branch (its point for the fit).
"""

import dataclasses
import pathlib
import runpy

from harness.spec import CheckpointConfig, ClusterConfig, EvalConfig, LogConfig, OptimConfig
from harness.spec.ladder import Ladder, params

default = runpy.run_path(str(pathlib.Path(__file__).with_name("shakespeare.py")))["spec"]

base = dataclasses.replace(
    default,
    train=dataclasses.replace(default.train, batch_tokens=512, micro_batch=2, seq_len=128),
    optim=OptimConfig(lr=2e-3, weight_decay=0.1, lr_scaling="sqrt", base_batch_tokens=1024),
    eval=EvalConfig(val_every=0, val_tokens=32_768, tasks=[], sample_every=0),
    # Trunks save every 1,000 steps (~10 minutes here) and keep their branch points for good.
    checkpoint=CheckpointConfig(every=1000, keep=2),
    log=LogConfig(every=10, wandb="disabled"),
    cluster=ClusterConfig(nodes=1, gpus_per_node=0, procs_per_node=1, cpus_per_task=1, time_min=60),
)

ladder = Ladder(
    name="ladder_shakespeare",
    base=base,
    shapes=[(2, d // 8, d) for d in (16, 24, 32, 48)],  # (n_layer, n_head, n_embd): depth 2, 8-wide heads
    multiples=[2, 4, 8, 16, 32],
    lr_ref=2e-3, n_ref=params(4, 128),  # the default experiment: 4 layers x 128, 2e-3 at 1,024 tokens/step
    batch_tokens=lambda n: 256 if n < 10_000 else 512,
    cooldown=0.2,
)

sweep = ladder.specs()  # 4 trunks, then 20 branches
