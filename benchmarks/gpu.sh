#!/usr/bin/env bash
# benchmarks/gpu.sh [HELLASWAG_DATA]: the GPU measurements for benchmarks/RESULTS.md, on one GPU.
# Each prints a JSON line; copy the figures, the GPU name and the torch version into RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bench() { python -m harness.bench "$@"; echo; }
# GPT-2 124M, T=1024, bf16: the standard recipe's step (AdamW fused, flash SDPA, vocab 50304, TF32).
bench train --preset gpt2 --micro-batch 64 --seq-len 1024 --steps 20 --warmup 5
bench train --preset gpt2 --micro-batch 64 --seq-len 1024 --steps 20 --warmup 5 --compile
bench train --preset gpt2 --micro-batch 32 --seq-len 1024 --steps 20 --warmup 5 --compile
# Checkpointing a 124M model with its AdamW state from the GPU: save, async block, load.
bench checkpoint --preset gpt2 --device cuda
# The reader against the GPU's appetite (~500K tokens/s would need 20M+/s from the reader).
bench data --micro-batch 64 --seq-len 1024
if [ $# -ge 1 ]; then
  bench hellaswag --preset gpt2 --data "$1" --limit 10042 --batch-examples 32 --device cuda
fi
