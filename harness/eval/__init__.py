"""Evaluation: validation loss, and the benchmarks of the task registry (registry.py), in the training loop
and standalone (`python -m harness.eval`)."""

from harness.spec import EvalConfig

__all__ = ["EvalConfig"]
