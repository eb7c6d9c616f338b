"""Tokens: the GPT-2 tokenizer, text sources, preparing shards from them, and the sharded reader.

`from harness.data import DataConfig, ShardedTokenReader, ...` keeps working for code written before the
spec moved to harness.spec; the reader (torch) loads only when asked for.
"""

import importlib

from harness.data.manifest import DataError, load_manifest, prepare_hint
from harness.spec import DataConfig


def __getattr__(name: str) -> object:
    if name == "ShardedTokenReader":
        return importlib.import_module("harness.data.reader").ShardedTokenReader
    raise AttributeError(f"module 'harness.data' has no attribute {name!r}")


__all__ = ["DataConfig", "DataError", "ShardedTokenReader", "load_manifest", "prepare_hint"]
