"""The model: GPT-2 (gpt.py), its weights in and out (io.py), and what a source of weights is (sources.py).

`from harness.model import ModelConfig, GPT, ...` keeps working for code written before the spec moved
to harness.spec; the torch modules load only when one of their names is asked for, so that the torch-free
sources.py costs no torch to import.
"""

import importlib

from harness.spec import PRESETS, ModelConfig

_MOVED = {"gpt": ("GPT", "PEAK_BF16_TFLOPS", "autocast", "model_flops_utilisation", "peak_flops"),
          "io": ("copy_weights", "hf_gpt2_weights", "load_hf_gpt2"), "sources": ("hf_gpt2_config",)}


def __getattr__(name: str) -> object:
    for module, names in _MOVED.items():
        if name in names:
            return getattr(importlib.import_module(f"harness.model.{module}"), name)
    raise AttributeError(f"module 'harness.model' has no attribute {name!r}")


__all__ = ["PRESETS", "ModelConfig", *(n for names in _MOVED.values() for n in names)]
