"""What the benchmarks and the acceptance command share: the machine they ran on, one printed report, and
timed training steps."""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from harness import distributed
from harness.data.tokenizer import VOCAB_SIZE
from harness.model.gpt import autocast
from harness.spec import OptimConfig
from harness.train.optim import build_optimizer


def machine() -> dict:
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        device = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
                      platform.processor())
        device += f" ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return {"device": device, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}


def report(what: str, figures: dict, rows: list[tuple[str, object]]) -> dict:
    out = {"bench": what, **figures, "machine": machine()}
    print(json.dumps(out))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return out


def time_train_steps(model: nn.Module, args: argparse.Namespace, env: distributed.DistEnv) -> list[float]:
    """Seconds per optimizer step (forward, backward, AdamW), after warm-up."""
    dev = env.device
    precision = autocast(dev, args.dtype)
    opt = build_optimizer(model, OptimConfig(), dev.type)
    # As the trainer does: compile the model, then wrap it in DDP.
    train_model = torch.compile(model) if args.compile else model
    if env.distributed:
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=[env.local_rank]
                                                          if dev.type == "cuda" else None)
    g = torch.Generator(device="cpu").manual_seed(env.rank)
    x = torch.randint(0, VOCAB_SIZE, (args.micro_batch, args.seq_len + 1), generator=g).to(dev)
    times = []
    for i in range(args.warmup + args.steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with precision:
            _, loss = train_model(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return times
