"""GPT-2 124M on OpenWebText: nanoGPT's recipe (val loss 2.85 after ~300B tokens).

    python -m harness.prepare openwebtext
    python -m harness.submit experiments/openwebtext.py

Batch: 12 sequences x 1024 tokens x 40 accumulated passes = 491,520 tokens/step (nanoGPT's
8 GPUs x 5 accumulations). Any world size dividing the 480 sequences per step works: 8 GPUs
accumulate 5 passes, 1 GPU 40. On H100s a micro_batch of 60 (8 GPUs, 1 pass) is faster.
Steps: 600,000 x 491,520 = 295B tokens, ~32 epochs of OpenWebText's ~9B; warmup 2,000.
"""

from harness.spec import (
    CheckpointConfig,
    ClusterConfig,
    DataConfig,
    EvalConfig,
    Experiment,
    LogConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
)

spec = Experiment(
    name="openwebtext",
    model=ModelConfig(preset="gpt2"),
    data=DataConfig(dir="log/data/openwebtext", shuffle=True),
    train=TrainConfig(batch_tokens=491_520, micro_batch=12, seq_len=1024, compile=True),
    optim=OptimConfig(lr=6e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, grad_clip=1.0),
    schedule=ScheduleConfig(steps=600_000, warmup=2000, min_lr=6e-5, decay="cosine"),
    # 5 x 491,520 = 2,457,600 val tokens (nanoGPT: 200 batches of 12 x 1024) every 2,000 steps.
    eval=EvalConfig(val_every=2000, val_tokens=2_457_600, tasks=["hellaswag_nanogpt"], tasks_every=2000,
                    sample_every=10_000),
    checkpoint=CheckpointConfig(every=2000, keep=3, permanent_every=50_000, async_save=True),
    log=LogConfig(every=10),
    # ~4 days on 8 x H100: the time limit is per job run; the run requeues itself and resumes.
    cluster=ClusterConfig(nodes=1, gpus_per_node=8, cpus_per_task=64, time_min=24 * 60),
)
