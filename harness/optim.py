"""OptimConfig's and ScheduleConfig's former home, for experiment files written before harness.spec (no
torch loads for them). The optimizer is harness.train.optim; the schedule, harness.spec.optim.lr_at."""

import importlib

from harness.spec import OptimConfig, ScheduleConfig, lr_at


def __getattr__(name: str) -> object:
    return getattr(importlib.import_module("harness.train.optim"), name)


__all__ = ["OptimConfig", "ScheduleConfig", "lr_at"]
