"""Evaluation: validation loss and HellaSwag, in the training loop and standalone (`python -m harness.eval`)."""

from dataclasses import dataclass


@dataclass
class EvalConfig:
    """What the trainer evaluates, and how often (in optimizer steps; 0 turns a kind off)."""

    val_every: int = 250  # validation loss every N steps, and at the start and the end
    val_tokens: int = 10_485_760  # tokens per validation pass: the same fixed tokens every time
    hellaswag_every: int = 250  # HellaSwag every N steps, and at the end
    hellaswag_limit: int = 0  # only the first N HellaSwag examples (0: all 10,042)
    hellaswag_data: str = ""  # hellaswag_val.jsonl or a datasets.save_to_disk directory (empty: the cache)
    sample_every: int = 250  # a text sample from rank 0 every N steps
    sample_prompt: str = "Hello, I'm a language model,"  # where samples start
    sample_tokens: int = 64  # tokens per sample

    def check(self) -> list[str]:
        """Problems with these settings, each naming its field."""
        names = ("val_every", "hellaswag_every", "hellaswag_limit", "sample_every", "sample_tokens")
        return [f"{n}: must be >= 0, got {getattr(self, n)}" for n in names if getattr(self, n) < 0]
