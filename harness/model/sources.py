"""Where a model's weights can come from, and its shape, read from JSON alone (no torch).

A source is a run directory (its newest checkpoint that loads), one checkpoint directory (its
meta.json vouches for its files), or a HuggingFace GPT-2 directory (config.json with a model_type).
`model.init_from`, harness.eval, harness.generate and export all take one; checking a spec against its
source costs no weights read, so harness.submit can do it on a login node.
"""

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from harness.run_dir import RunDir, checkpoint_step, list_checkpoints
from harness.spec import ModelConfig

T = TypeVar("T")
SAME = ("n_layer", "n_head", "n_embd", "bias")  # fields a run started from a source must share with it


class CheckpointError(RuntimeError):
    """A checkpoint that must not be used; the message names it and what is wrong."""


class CheckpointLayoutError(CheckpointError):
    """A sound checkpoint written by another number of ranks: the user decides, it is not skipped."""


def read_meta(path: Path) -> dict:
    """The checkpoint's meta.json, after checking that every file it lists is there in full."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no meta.json (incomplete checkpoint)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}/meta.json: unreadable ({e})") from None
    if meta.get("step") != checkpoint_step(path):
        raise CheckpointError(f"{path}: meta.json is for step {meta.get('step')}")
    for name, size in meta.get("files", {}).items():
        f = path / name
        if not f.exists():
            raise CheckpointError(f"{f}: missing")
        if f.stat().st_size != size:
            raise CheckpointError(f"{f}: {f.stat().st_size} bytes, meta.json says {size} (truncated or replaced)")
    for name in ("model.pt", "optim.pt"):
        if name not in meta.get("files", {}):
            raise CheckpointError(f"{path}: meta.json lists no {name}")
    return meta


def newest_that_loads(root: Path, load_one: Callable[[Path], T]) -> tuple[Path, T] | None:
    """`load_one` of the newest checkpoint under `root` for which it succeeds; corrupt or incomplete
    newer ones are skipped with a warning. A layout error is the user's decision, not skipped."""
    for path in reversed(list_checkpoints(root)):
        try:
            return path, load_one(path)
        except CheckpointLayoutError:
            raise
        except CheckpointError as e:
            print(f"WARNING: skipping checkpoint {path}: {e}", file=sys.stderr, flush=True)
    return None


def checkpoint_of(path: Path, read: Callable[[Path], T]) -> tuple[Path, T] | None:
    """`read` of a checkpoint directory, or of a run directory's newest checkpoint for which it succeeds."""
    if (path / "meta.json").exists():
        return path, read(path)
    return newest_that_loads(RunDir(path).checkpoints, read)


def is_huggingface_dir(path: Path) -> bool:
    """A HuggingFace model directory: its config.json has a model_type (a harness run's has not)."""
    config = path / "config.json"  # HuggingFace's file name
    return config.exists() and "model_type" in json.loads(config.read_text())


def hf_gpt2_config(path: str | Path) -> ModelConfig:
    """The shape of the GPT-2 in a HuggingFace directory, from its config.json alone (no weights read)."""
    path = Path(path)
    try:
        hf = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no config.json; not a HuggingFace GPT-2 directory") from None
    if hf.get("model_type") != "gpt2":
        raise ValueError(f"{path}/config.json: model_type {hf.get('model_type')!r} is not 'gpt2'")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{path}/config.json: activation {hf['activation_function']!r} is not GPT-2's")
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
        raise ValueError(f"{path}/config.json: attention variants are not supported")
    return ModelConfig(preset=None, n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                       block_size=hf["n_positions"], vocab_size=hf["vocab_size"], dropout=0.0, bias=True)


def source_config(path: str | Path) -> ModelConfig:
    """The source's model shape, read from its config.json or meta.json (no weights); raises
    ValueError naming the path when it is neither a HuggingFace GPT-2 nor a checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: no such directory")
    try:
        if is_huggingface_dir(path):
            return hf_gpt2_config(path)
        found = checkpoint_of(path, read_meta)
    except (OSError, ValueError, KeyError, CheckpointError) as e:
        raise ValueError(str(e)) from None
    if found is None:
        raise ValueError(f"{path}: neither a HuggingFace GPT-2 directory (config.json with a model_type) nor a "
                         "run or checkpoint directory with a valid checkpoint")
    return ModelConfig(**found[1]["spec"]["model"])


def check_init_from(cfg: ModelConfig) -> list[str]:
    """Problems of starting `cfg` (resolved) from cfg.init_from, each naming a model field.

    The spec's shape must be the source's: the same layers, heads, width and biases; a context no
    longer than the source's position table (a shorter one keeps its first rows, as nanoGPT's
    crop_block_size); and the same predicted vocabulary (see `fill_from_source`)."""
    try:
        src = source_config(cfg.init_from)
    except ValueError as e:
        return [f"init_from: {e}"]
    where = f"model.init_from={cfg.init_from}"
    problems = [f"{k}: {getattr(cfg, k)} does not match {where} ({getattr(src, k)})"
                for k in SAME if getattr(cfg, k) != getattr(src, k)]
    if cfg.block_size > src.block_size:
        problems.append(f"block_size: {cfg.block_size} is longer than {where}'s position table ({src.block_size})")
    if cfg.vocab_size < src.predicted_vocab:
        problems.append(f"vocab_size: {cfg.vocab_size} is smaller than {where}'s vocabulary ({src.predicted_vocab:,})")
    elif cfg.predicted_vocab != src.predicted_vocab:
        problems.append(f"unpadded_vocab: must be {src.predicted_vocab} ({where} predicts {src.predicted_vocab:,} "
                        f"tokens; model.vocab_size={cfg.vocab_size} pads them, and the padded rows would take "
                        f"probability mass), got {cfg.unpadded_vocab}")
    return problems


def fill_from_source(cfg: ModelConfig) -> dict[str, int]:
    """What a spec left unsaid that its init_from source says: the vocabulary it predicts, when the spec pads
    more rows than the source has and names no `unpadded_vocab` (OpenAI's 50,257 in a table of 50,304).
    Returns {"unpadded_vocab": n}, or nothing."""
    if not cfg.init_from or cfg.unpadded_vocab:
        return {}
    try:
        src = source_config(cfg.init_from)
    except ValueError:
        return {}  # check_init_from says what is wrong with it
    if cfg.vocab_size > src.predicted_vocab:
        return {"unpadded_vocab": src.predicted_vocab}
    return {}
