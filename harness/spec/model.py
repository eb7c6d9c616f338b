"""The model's shape: a GPT-2 preset or a free size, and where its first weights come from."""

import dataclasses
from dataclasses import dataclass

from harness.spec.section import Section

PRESETS = {  # (n_layer, n_head, n_embd), as released by OpenAI
    "gpt2": (12, 12, 768),  # 124M
    "gpt2-medium": (24, 16, 1024),  # 350M
    "gpt2-large": (36, 20, 1280),  # 774M
    "gpt2-xl": (48, 25, 1600),  # 1558M
}


@dataclass
class ModelConfig(Section):
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
