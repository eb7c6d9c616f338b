"""The embedded default: a small GPT on Shakespeare's plays, trained on 2 CPU cores in about 5 minutes.

    python -m harness.prepare shakespeare && python -m harness.train experiments/shakespeare.py

With GPT-2's 50,257-token vocabulary the output layer dominates a small model: at n_embd=128 it is
6 * 128 * 50304 = 39 MFLOP per token against 6 * 12 * 4 * 128^2 = 5 MFLOP for the four blocks.
So the model stays narrow and the run short: 160 steps * 4,096 tokens = 655K tokens, about 0.46 of
an epoch of the 1.41M training tokens.
"""

from harness.checkpoint import CheckpointConfig
from harness.cluster import ClusterConfig
from harness.config import Experiment, TrainConfig
from harness.data import DataConfig
from harness.eval import EvalConfig
from harness.metrics import LogConfig
from harness.model import ModelConfig
from harness.optim import OptimConfig, ScheduleConfig

spec = Experiment(
    name="shakespeare",
    # 4 layers x 4 heads x 128 wide, 128-token context: 7.2M parameters, 6.4M of them the embedding.
    model=ModelConfig(preset=None, n_layer=4, n_head=4, n_embd=128, block_size=128),
    data=DataConfig(dir="log/data/shakespeare"),
    # 16 sequences x 128 tokens = 2,048 tokens per pass; 4,096 per step is 2 passes on one
    # process, or 1 pass each on 2 processes (torchrun --nproc-per-node 2).
    train=TrainConfig(batch_tokens=4096, micro_batch=16, seq_len=128, device="cpu", stop_check_every=1),
    # Small models take a larger learning rate than GPT-2's 6e-4.
    optim=OptimConfig(lr=3e-3, weight_decay=0.1),
    schedule=ScheduleConfig(steps=160, warmup=10, min_lr=3e-4),
    # 32,768 val tokens (a quarter of the val split) every 40 steps; HellaSwag is meaningless at this size.
    eval=EvalConfig(val_every=40, val_tokens=32_768, hellaswag_every=0, sample_every=80,
                    sample_prompt="ROMEO:\n", sample_tokens=48),
    checkpoint=CheckpointConfig(every=40, keep=2),
    log=LogConfig(every=1),
    # On a CPU Slurm cluster: 1 node, 2 training processes.
    cluster=ClusterConfig(nodes=1, gpus_per_node=0, procs_per_node=2, cpus_per_task=2, time_min=30),
)
