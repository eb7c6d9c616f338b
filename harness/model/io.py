"""Model weights in and out, in one place: checkpoints of this harness and HuggingFace GPT-2 directories,
through one state-dict adapter each way (`from_hf`: HuggingFace's names and layouts -> this GPT's; `to_hf`: back).

`load_model` gives a model to evaluate or sample from; `load_pretrained` fills a fresh run's model from
`model.init_from` (nanoGPT's `init_from`, the finetuning step: only the weights come over, the
optimizer, the schedule and the data position start afresh; once the run has a checkpoint of its own,
that wins and the source is not read again).
"""

import zipfile
from pathlib import Path

import torch

from harness.model.gpt import GPT
from harness.model.sources import (
    CheckpointError,
    check_init_from,
    checkpoint_of,
    hf_gpt2_config,
    is_huggingface_dir,
    read_meta,
)
from harness.run_dir import RunDir
from harness.spec import ModelConfig

# HuggingFace's GPT-2 keeps these as Conv1D, whose weight is (in, out); nn.Linear's is (out, in).
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
EMBEDDING = ("transformer.wte.weight", "lm_head.weight")  # one tied tensor, under both names


def load_file(path: Path) -> object:
    """torch.load of a checkpoint file, after checking the CRC32 that torch.save stores for every record of
    its zip archive: torch.load does not check them, and returns a tensor with corrupted bytes as if it
    were sound."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: record {bad} fails its CRC32 check (corrupted)")
    try:
        # weights_only: a checkpoint is data, and must not be able to run code when loaded.
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None


# ----------------------------------------------------------------------------- HuggingFace GPT-2


def from_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A HuggingFace GPT-2 state dict under this GPT's names and layouts."""
    out = {}
    for name, w in sd.items():
        name = name.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")):  # older files' causal-mask buffers, not weights
            continue
        if name.endswith(_CONV1D):
            w = w.t()
        out[name if name == "lm_head.weight" else f"transformer.{name}"] = w
    if "lm_head.weight" not in out and "transformer.wte.weight" in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]  # tied to the embedding: often not saved
    return out


def to_hf(model: GPT, vocab: int) -> dict[str, torch.Tensor]:
    """`model`'s weights under HuggingFace GPT2LMHeadModel's names and layouts: the first `vocab` rows of the
    embedding (a padded table's extra rows predict no token), zero biases where the model has none (the same
    function), contiguous fp32 copies (safetensors stores each tensor once; the tied head is not saved)."""
    out = {}
    for name, w in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        w = w.detach().float()
        if name == "transformer.wte.weight":
            w = w[:vocab]
        if name.endswith(_CONV1D):
            w = w.t()
        out[name] = w.contiguous().clone()
    if not model.config.bias:
        biases = {name.removesuffix("weight") + "bias": torch.zeros(w.shape[-1] if name.endswith(_CONV1D) else
                                                                    w.shape[0])
                  for name, w in out.items() if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight", *_CONV1D))}
        out |= biases
    return out


def hf_gpt2_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a HuggingFace GPT-2 directory under this GPT's names and layouts."""
    path = Path(path)
    if (path / "model.safetensors").exists():
        from safetensors.torch import load_file as load_safetensors

        sd = load_safetensors(path / "model.safetensors")
    elif (path / "pytorch_model.bin").exists():
        sd = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{path}: neither model.safetensors nor pytorch_model.bin")
    return from_hf(sd)


def load_hf_gpt2(path: str | Path) -> GPT:
    """A GPT-2 from a HuggingFace directory (config.json + model.safetensors or pytorch_model.bin).

    The vocabulary stays at 50257 (no padding) so the logits match the original exactly.
    """
    model = GPT(hf_gpt2_config(path))
    copy_weights(model, hf_gpt2_weights(path), str(path))
    return model


def copy_weights(model: GPT, sd: dict[str, torch.Tensor], where: str) -> None:
    """Copy `sd` (this GPT's names) into `model`; every tensor's shape must match."""
    for key, target in model.state_dict().items():
        if key not in sd:
            raise KeyError(f"{where}: no weight for {key}")
        if sd[key].shape != target.shape:
            raise ValueError(f"{where}: {key} has shape {tuple(sd[key].shape)}, expected {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(sd[key])  # state_dict() tensors share storage with the parameters


# ----------------------------------------------------------------------------- any source


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, dict]:
    """A model to evaluate or sample from: a run directory (its newest checkpoint that loads), a
    checkpoint directory, or a HuggingFace GPT-2 directory. Returns the model and where it came from."""
    path = Path(path)
    if is_huggingface_dir(path):
        model = load_hf_gpt2(path)
        return model.to(device).eval(), {"source": "huggingface", "path": str(path), "step": None}

    def weights(ckpt: Path) -> tuple[dict, dict]:
        return read_meta(ckpt), load_file(ckpt / "model.pt")  # the optimizer state is not needed

    found = checkpoint_of(path, weights)
    if found is None:
        raise CheckpointError(f"{path}: no valid checkpoint under {RunDir(path).checkpoints} (nor a HuggingFace "
                              "GPT-2 dir)")
    ckpt, (meta, state) = found
    model = GPT(ModelConfig(**meta["spec"]["model"]))
    model.load_state_dict(state)
    info = {"source": "checkpoint", "path": str(ckpt), "step": meta["step"], "name": meta["spec"]["name"]}
    return model.to(device).eval(), info


def load_pretrained(model: GPT) -> None:
    """Copy model.config.init_from's weights into `model`, whose shape `check_init_from` found compatible.

    OpenAI's 50,257 embedding rows are copied exactly; a run that pads the table to 50,304 masks the padded
    ids' logits (model.unpadded_vocab), so that they take no probability mass."""
    cfg, path = model.config, Path(model.config.init_from)
    if problems := check_init_from(cfg):
        raise ValueError("model." + "\nmodel.".join(problems))
    if is_huggingface_dir(path):
        weights, where = hf_gpt2_weights(path), str(path)
    else:
        ckpt, weights = checkpoint_of(path, lambda p: load_file(p / "model.pt"))
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
