"""GPT-2: the model, its size presets, and loading OpenAI's weights from a HuggingFace directory."""

import contextlib
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn import functional as F

PRESETS = {  # (n_layer, n_head, n_embd), as released by OpenAI
    "gpt2": (12, 12, 768),  # 124M
    "gpt2-medium": (24, 16, 1024),  # 350M
    "gpt2-large": (36, 20, 1280),  # 774M
    "gpt2-xl": (48, 25, 1600),  # 1558M
}


@dataclass
class ModelConfig:
    """GPT-2 shape: a preset, or a free size (preset None and all of n_layer, n_head, n_embd)."""

    preset: str | None = "gpt2"  # gpt2 | gpt2-medium | gpt2-large | gpt2-xl, or None for a free size
    n_layer: int | None = None  # transformer blocks (None: the preset's)
    n_head: int | None = None  # attention heads (None: the preset's)
    n_embd: int | None = None  # embedding width (None: the preset's)
    block_size: int = 1024  # longest sequence the position table covers
    vocab_size: int = 50304  # GPT-2's 50257 padded to a multiple of 128: faster matmuls, same model
    dropout: float = 0.0  # dropout on attention, residual and embeddings (0 for pretraining)
    bias: bool = True  # biases in Linear and LayerNorm layers, as in GPT-2
    # The tokenizer's vocabulary inside the padded vocab_size: logits of ids at or above it are -inf, so the
    # padded rows take no probability mass (0: none masked). 50257 when init_from has OpenAI's vocabulary.
    unpadded_vocab: int = 0
    # Start from pretrained weights (a fresh run only; its own checkpoints win): a HuggingFace GPT-2
    # directory, another run's directory (its newest checkpoint) or a checkpoint directory. Empty: random.
    init_from: str = ""

    def sizes(self) -> dict[str, int | None]:
        """n_layer, n_head and n_embd, each the field's value or else the preset's."""
        sizes = {"n_layer": self.n_layer, "n_head": self.n_head, "n_embd": self.n_embd}
        preset = dict(zip(sizes, PRESETS.get(self.preset, (None,) * 3), strict=True))
        return {k: preset[k] if v is None else v for k, v in sizes.items()}

    def check(self) -> list[str]:
        """Problems with this shape, each naming its field."""
        if self.preset is not None and self.preset not in PRESETS:
            return [f"preset: unknown preset {self.preset!r} (known: {', '.join(PRESETS)})"]
        sizes = self.sizes()
        missing = [k for k, v in sizes.items() if v is None]
        if missing:
            return [f"{missing[0]}: required when model.preset is None"]
        dims = sizes | {"block_size": self.block_size, "vocab_size": self.vocab_size}
        problems = [f"{k}: must be positive, got {v}" for k, v in dims.items() if v <= 0]
        if not problems and sizes["n_embd"] % sizes["n_head"]:
            problems.append(f"n_embd: {sizes['n_embd']} is not divisible by model.n_head={sizes['n_head']}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout: must be in [0, 1), got {self.dropout}")
        if not 0 <= self.unpadded_vocab <= self.vocab_size:
            problems.append(f"unpadded_vocab: must be in [0, model.vocab_size={self.vocab_size}], got "
                            f"{self.unpadded_vocab}")
        return problems

    @property
    def predicted_vocab(self) -> int:
        """How many token ids the model can predict: the unpadded vocabulary, or all of vocab_size."""
        return self.unpadded_vocab or self.vocab_size

    def resolved(self) -> "ModelConfig":
        """A copy with every size filled in from the preset; raises ValueError naming the field."""
        problems = self.check()
        if problems:
            raise ValueError(f"model.{problems[0]}")
        return dataclasses.replace(self, **self.sizes())


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.c_proj.residual_scaled_init = True
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # One fused kernel (flash attention on CUDA) instead of materialising the T x T matrix.
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.c_proj.residual_scaled_init = True
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))  # GPT-2's "gelu_new"


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg = cfg.resolved()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
            ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        # Tied input and output embeddings, as in GPT-2: 38M fewer parameters at 124M.
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_scaled_init", False):
                # Each block adds two projections to the residual stream; scaling by 1/sqrt(2 L)
                # keeps the stream's variance from growing with depth (GPT-2 paper, section 2.3).
                std /= math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        T = idx.size(1)
        if self.config.block_size < T:
            raise ValueError(f"sequence of {T} tokens is longer than model.block_size={self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        if self.config.unpadded_vocab < self.config.vocab_size and self.config.unpadded_vocab:
            # The padded rows share the tied embedding, so no weight can make their logits small for every
            # hidden state (a zero row still scores 0, e^0 each in the softmax; GPT-2's head has no bias).
            # -inf does: those ids take exactly no probability mass and get no gradient, and the matmul
            # keeps its padded, faster width. A model started from OpenAI's 50,257 rows then computes
            # OpenAI's loss exactly (in-place is safe: the matmul's backward does not need its output).
            logits[..., self.config.unpadded_vocab:] = float("-inf")
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        """All parameters (the tied embedding counted once), or without the embedding tables."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, 6N + 12*L*H*Q*T (PaLM appendix B; N without the position table)."""
        cfg = self.config
        n = self.num_params() - self.transformer.wpe.weight.numel()
        return 6 * n + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * seq_len


PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}  # dense, per GPU


def peak_flops(device: torch.device, tflops: float = 0.0) -> float | None:
    """The device's peak for MFU: `tflops` if given, else a known GPU's dense bf16 peak, else None."""
    if tflops:
        return tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v * 1e12 for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return None


def model_flops_utilisation(flops_per_token: float, tokens_per_s: float, peak: float | None,
                            devices: int) -> float | None:
    """Model FLOPs utilisation: the FLOP/s the model's arithmetic needs over the devices' peak (None
    without a known peak)."""
    return flops_per_token * tokens_per_s / (peak * devices) if peak else None


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """The precision to run the model in: bf16 autocast for "bfloat16" (and for "auto" on CUDA), else fp32."""
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- HuggingFace GPT-2

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


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


def hf_gpt2_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a HuggingFace GPT-2 directory under this module's names and layouts."""
    path = Path(path)
    if (path / "model.safetensors").exists():
        from safetensors.torch import load_file

        sd = load_file(path / "model.safetensors")
    elif (path / "pytorch_model.bin").exists():
        sd = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{path}: neither model.safetensors nor pytorch_model.bin")
    out = {}
    for name, w in sd.items():
        name = name.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")):  # older files' causal-mask buffers, not weights
            continue
        if name.endswith(_CONV1D):  # HF's Conv1D stores (in, out); nn.Linear wants (out, in)
            w = w.t()
        out[name if name == "lm_head.weight" else f"transformer.{name}"] = w
    if "lm_head.weight" not in out and "transformer.wte.weight" in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]  # tied to the embedding: often not saved
    return out


def load_hf_gpt2(path: str | Path) -> GPT:
    """A GPT-2 from a HuggingFace directory (config.json + model.safetensors or pytorch_model.bin).

    The vocabulary stays at 50257 (no padding) so the logits match the original exactly.
    """
    model = GPT(hf_gpt2_config(path))
    copy_weights(model, hf_gpt2_weights(path), str(path))
    return model


def copy_weights(model: GPT, sd: dict[str, torch.Tensor], where: str) -> None:
    """Copy `sd` (this module's names) into `model`; every tensor's shape must match."""
    for key, target in model.state_dict().items():
        if key not in sd:
            raise KeyError(f"{where}: no weight for {key}")
        if sd[key].shape != target.shape:
            raise ValueError(f"{where}: {key} has shape {tuple(sd[key].shape)}, expected {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(sd[key])  # state_dict() tensors share storage with the parameters
