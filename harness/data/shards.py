"""Token shard files: uint16 GPT-2 ids behind a small header, so truncated or foreign files are caught.

The `.bin` layout is llm.c's: 256 int32 header words (magic 20240520, version 1, token count, zeros)
followed by the tokens as uint16. Shards written by llm.c's data scripts read here and vice versa.
build-nanogpt's `.npy` shards (a bare 1-D uint16 array) are read too.
"""

import hashlib
from pathlib import Path

import numpy as np

from harness.atomic import replacing

MAGIC = 20240520
VERSION = 1
HEADER_WORDS = 256
HEADER_BYTES = HEADER_WORDS * 4
TOKEN_DTYPE = np.uint16  # GPT-2's 50257 ids fit in 16 bits: half the bytes of int32


class ShardError(ValueError):
    """A shard file that must not be used; the message names the file and what is wrong."""


def write_shard(path: Path, tokens: np.ndarray) -> str:
    """Write `tokens` atomically and durably (harness.atomic) and return their sha256."""
    tokens = np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE)
    header = np.zeros(HEADER_WORDS, dtype=np.int32)
    header[:3] = (MAGIC, VERSION, len(tokens))
    with replacing(path) as f:
        f.write(header.tobytes())
        f.write(tokens.tobytes())
    return hashlib.sha256(header.tobytes() + tokens.tobytes()).hexdigest()


def shard_num_tokens(path: Path) -> int:
    """Token count from the header, after checking that the file size agrees with it."""
    if path.suffix == ".npy":
        return len(_open_npy(path))
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file is missing") from None
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: {size} bytes is shorter than the {HEADER_BYTES}-byte shard header")
    header = np.fromfile(path, dtype=np.int32, count=HEADER_WORDS)
    if header[0] != MAGIC:
        raise ShardError(f"{path}: bad magic number {header[0]} (expected {MAGIC}): not a token shard")
    if header[1] != VERSION:
        raise ShardError(f"{path}: unsupported shard version {header[1]} (expected {VERSION})")
    ntok = int(header[2])
    expected = HEADER_BYTES + ntok * np.dtype(TOKEN_DTYPE).itemsize
    if size != expected:
        raise ShardError(
            f"{path}: header says {ntok} tokens ({expected} bytes) but the file has {size} bytes "
            "(truncated or overwritten)"
        )
    return ntok


def open_shard(path: Path, vocab_size: int | None = None) -> np.ndarray:
    """Memory-map a shard read-only (no copy into RAM), validating header, size and token range."""
    if path.suffix == ".npy":
        tokens = _open_npy(path)
    else:
        ntok = shard_num_tokens(path)
        tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(ntok,))
    if len(tokens) == 0:
        raise ShardError(f"{path}: shard holds no tokens")
    if vocab_size is not None:
        top = int(tokens.max())
        if top >= vocab_size:
            where = int(np.argmax(tokens >= vocab_size))
            raise ShardError(f"{path}: token id {top} >= vocab size {vocab_size} (first at position {where})")
    return tokens


def _open_npy(path: Path) -> np.ndarray:
    try:
        tokens = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file is missing") from None
    except ValueError as e:  # numpy's message for a truncated array or a bad header
        raise ShardError(f"{path}: unreadable .npy shard: {e}") from None
    if tokens.ndim != 1 or tokens.dtype != TOKEN_DTYPE:
        raise ShardError(f"{path}: expected a 1-D uint16 array, found {tokens.dtype} of shape {tokens.shape}")
    return tokens


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()
