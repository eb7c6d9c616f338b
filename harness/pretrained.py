"""model.init_from: a run that starts from pretrained weights (nanoGPT's `init_from`, the finetuning step).

The source is a HuggingFace GPT-2 directory (OpenAI's `gpt2` ... `gpt2-xl`) or another run of this
harness (its directory, for the newest checkpoint that loads, or one checkpoint directory). Only the
weights come over: the optimizer, the schedule and the data position start afresh. Once the run has a
checkpoint of its own, that checkpoint wins and the source is not read again (the trainer's restore).

The spec's shape must be the source's: the same layers, heads, width and biases; a context no longer
than the source's position table (a shorter one keeps its first rows, as nanoGPT's crop_block_size);
and the same predicted vocabulary. OpenAI's 50,257 rows are copied exactly; a run that pads to 50,304
must say `model.unpadded_vocab=50257`, so that the padded rows take no probability mass (GPT.forward).
"""

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from harness.checkpoint import CheckpointError, is_huggingface_dir, load_file, newest_that_loads, read_meta
from harness.model import GPT, ModelConfig, copy_weights, hf_gpt2_config, hf_gpt2_weights
from harness.run_dir import RunDir

T = TypeVar("T")
SAME = ("n_layer", "n_head", "n_embd", "bias")  # fields the spec must share with the source
EMBEDDING = ("transformer.wte.weight", "lm_head.weight")  # one tied tensor, under both names


def source_config(path: str | Path) -> ModelConfig:
    """The source's model shape, read from its config.json or meta.json (no weights); raises
    ValueError naming the path when it is neither a HuggingFace GPT-2 nor a checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: no such directory")
    try:
        if is_huggingface_dir(path):
            return hf_gpt2_config(path)
        found = _checkpoint(path, read_meta)
    except (OSError, ValueError, KeyError, CheckpointError) as e:
        raise ValueError(str(e)) from None
    if found is None:
        raise ValueError(f"{path}: neither a HuggingFace GPT-2 directory (config.json with a model_type) nor a "
                         "run or checkpoint directory with a valid checkpoint")
    return ModelConfig(**found[1]["spec"]["model"])


def check(cfg: ModelConfig) -> list[str]:
    """Problems of starting `cfg` (resolved) from cfg.init_from, each naming a model field."""
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


def load_pretrained(model: GPT) -> None:
    """Copy model.config.init_from's weights into `model`, whose shape `check` found compatible."""
    cfg, path = model.config, Path(model.config.init_from)
    if problems := check(cfg):
        raise ValueError("model." + "\nmodel.".join(problems))
    if is_huggingface_dir(path):
        weights, where = hf_gpt2_weights(path), str(path)
    else:
        ckpt, weights = _checkpoint(path, lambda p: load_file(p / "model.pt"))
        where = str(ckpt)
    vocab = cfg.predicted_vocab
    weights = dict(weights)
    for key in EMBEDDING:
        # The source's own rows, then zeros: a padded row is never looked up (no token has its id) and its
        # logit is masked, so it never gets a gradient; AdamW and weight decay keep a zero row at zero.
        rows = weights[key].new_zeros(model.state_dict()[key].shape)
        rows[:vocab] = weights[key][:vocab]
        weights[key] = rows
    weights["transformer.wpe.weight"] = weights["transformer.wpe.weight"][:cfg.block_size]  # a shorter context
    copy_weights(model, weights, where)


def _checkpoint(path: Path, read: Callable[[Path], T]) -> tuple[Path, T] | None:
    """`read` of a checkpoint directory, or of a run directory's newest checkpoint for which it succeeds."""
    if (path / "meta.json").exists():
        return path, read(path)
    return newest_that_loads(RunDir(path).checkpoints, read)
