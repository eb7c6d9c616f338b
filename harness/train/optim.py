"""AdamW with GPT-2's parameter groups, and optional ZeRO-1 sharding. (The learning-rate schedule, plain
arithmetic, is harness.spec.optim.lr_at: analysis draws it without torch.)"""

import inspect

import torch
import torch.distributed as dist
from torch import nn

from harness.spec import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # Decay the matrices of matmuls and embeddings (dim >= 2); biases and LayerNorm gains stay free.
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig, device_type: str) -> torch.optim.Optimizer:
    fused = cfg.fused
    if fused is None:
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
    kwargs = dict(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)
    if cfg.zero1 and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        # Each rank keeps Adam moments for 1/world of the parameters. ZeRO takes one group at
        # construction; the second (no decay) is added afterwards.
        groups = param_groups(model, cfg.weight_decay)
        opt = ZeroRedundancyOptimizer(groups[0]["params"], optimizer_class=torch.optim.AdamW,
                                      weight_decay=cfg.weight_decay, **kwargs)
        opt.add_param_group(groups[1])
        return opt
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
