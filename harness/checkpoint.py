"""CheckpointConfig's former home, for experiment files written before harness.spec (no torch loads for
it). Everything else of checkpoints is harness.train.checkpoint (writing, resuming) and harness.model
(reading), and still answers here by name."""

import importlib

from harness.spec import CheckpointConfig

_MOVED = ("harness.train.checkpoint", "harness.model.io", "harness.model.sources")


def __getattr__(name: str) -> object:
    for module in _MOVED:
        found = getattr(importlib.import_module(module), name, None)
        if found is not None:
            return found
    raise AttributeError(f"module 'harness.checkpoint' has no attribute {name!r}")


__all__ = ["CheckpointConfig"]
