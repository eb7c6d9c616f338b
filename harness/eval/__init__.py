"""Evaluation: validation loss and bits per byte, the benchmarks of the task registry (registry.py: the zero-shot
suite scored as lm-evaluation-harness scores it, and build-nanogpt's HellaSwag), in the training loop and
standalone (`python -m harness.eval`)."""

from harness.spec import EvalConfig

__all__ = ["EvalConfig"]
