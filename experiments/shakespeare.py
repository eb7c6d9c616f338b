"""The embedded default: a small GPT on Shakespeare's plays, trained on 2 CPU cores in about 5 minutes.

    python -m harness.prepare shakespeare && python -m harness.train experiments/shakespeare.py

With GPT-2's 50,257-token vocabulary the output layer dominates a small model: at n_embd=128 it is
6 * 128 * 50304 = 39 MFLOP per token against 6 * 12 * 4 * 128^2 = 5 MFLOP for the four blocks, and
2 CPU cores train ~2,000 tokens/s. In a budget of ~600K tokens (0.42 of an epoch of the 1.41M
training tokens) more, smaller steps learn more: measured on this corpus, 160 x 4,096 tokens ends at
val 6.02, 320 x 2,048 at 5.72, 640 x 1,024 at 5.55.
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
    name="shakespeare",
    # 4 layers x 4 heads x 128 wide, 128-token context: 7.2M parameters, 6.4M of them the embedding.
    model=ModelConfig(preset=None, n_layer=4, n_head=4, n_embd=128, block_size=128),
    data=DataConfig(dir="log/data/shakespeare"),
    # 8 sequences x 128 tokens = 1,024 tokens per step, one pass on one process (2 threads).
    # Under torchrun with 2 processes use --train.micro_batch 4.
    train=TrainConfig(batch_tokens=1024, micro_batch=8, seq_len=128, device="cpu", stop_check_every=1),
    # Small models take a larger learning rate than GPT-2's 6e-4.
    optim=OptimConfig(lr=2e-3, weight_decay=0.1),
    # 576 steps x 1,024 = 589,824 tokens; warmup 30 steps, cosine to a tenth.
    schedule=ScheduleConfig(steps=576, warmup=30, min_lr=2e-4),
    # 32,768 val tokens (a quarter of the val split) at steps 0, 192, 384, 576; HellaSwag is
    # meaningless at this size (it would score chance).
    eval=EvalConfig(val_every=192, val_tokens=32_768, tasks=[], sample_every=288,
                    sample_prompt="ROMEO:\n", sample_tokens=48),
    checkpoint=CheckpointConfig(every=192, keep=2),
    log=LogConfig(every=1),
    # On a CPU Slurm cluster: 1 node, 1 process with 2 cores.
    cluster=ClusterConfig(nodes=1, gpus_per_node=0, procs_per_node=1, cpus_per_task=2, time_min=30),
)
