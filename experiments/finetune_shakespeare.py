"""GPT-2 124M from OpenAI's weights, finetuned on Shakespeare's plays (nanoGPT's finetune_shakespeare). For a GPU.

    # once, on a machine with internet: OpenAI's GPT-2 124M as a HuggingFace directory (config.json + weights)
    python -c "from huggingface_hub import snapshot_download; snapshot_download('openai-community/gpt2', \
        local_dir='gpt2', allow_patterns=['config.json', 'model.safetensors'])"
    python -m harness.prepare shakespeare
    python -m harness.submit experiments/finetune_shakespeare.py --model.init_from /path/to/gpt2

Weights only come from init_from: the optimizer, schedule and data position start afresh, and a
restart resumes the finetune's own checkpoint. OpenAI's 50,257 embedding rows are copied exactly into
a table padded to 50,304 (faster matmuls); unpadded_vocab=50257 masks the 47 padded logits, so step 0's
val loss is OpenAI GPT-2's own loss on these plays (up to bf16 rounding).
Batch: 8 sequences x 1,024 tokens x 4 accumulated passes = 32,768 tokens/step (nanoGPT's 1 x 1024 x 32).
Steps: 80 x 32,768 = 2.6M tokens, ~1.9 epochs of the 1.41M training tokens; nanoGPT's constant 3e-5
(a finetune nudges the weights: a pretraining-sized lr would undo what they know), no warmup.
On a CPU the 2.6M tokens would take about an hour (GPT-2 124M trains ~700 tokens/s in bf16 on 2 cores).
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
    name="finetune_shakespeare",
    # gpt2's shape (12 layers x 12 heads x 768 wide, 1,024 positions); the source's must match.
    model=ModelConfig(preset="gpt2", vocab_size=50304, unpadded_vocab=50257, init_from="log/models/gpt2"),
    data=DataConfig(dir="log/data/shakespeare"),
    train=TrainConfig(batch_tokens=32_768, micro_batch=8, seq_len=1024),
    optim=OptimConfig(lr=3e-5, weight_decay=0.1),
    schedule=ScheduleConfig(steps=80, warmup=0, min_lr=3e-5, decay="constant"),
    # 98,304 val tokens (3 steps' worth, ~3/4 of the 0.13M val split) at steps 0 (OpenAI's GPT-2), 20, ..., 80.
    eval=EvalConfig(val_every=20, val_tokens=98_304, tasks=[], sample_every=40, sample_prompt="ROMEO:\n",
                    sample_tokens=64),
    checkpoint=CheckpointConfig(every=20, keep=2),
    log=LogConfig(every=1),
    cluster=ClusterConfig(nodes=1, gpus_per_node=1, cpus_per_task=8, time_min=30),
)
