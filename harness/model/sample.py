"""Text from a model: top-k sampling, with a generator of its own so that a training run's random streams
stay untouched."""

import torch

from harness.data.tokenizer import VOCAB_SIZE, gpt2_encoding


@torch.no_grad()
def sample(model: torch.nn.Module, prompt: str, max_new_tokens: int = 64, temperature: float = 1.0,
           top_k: int = 50, num_samples: int = 1, generator: torch.Generator | None = None) -> list[str]:
    """Top-k sampling; `generator` keeps the training run's own random streams untouched."""
    enc = gpt2_encoding()
    device = next(model.parameters()).device
    ids = enc.encode(prompt, allowed_special={"<|endoftext|>"}) or [enc.eot_token]
    idx = torch.tensor([ids] * num_samples, device=device)
    block = model.config.block_size
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -block:])
        # Only real tokens: the rows padding the vocabulary to 50304 are never sampled.
        logits = logits[:, -1, :VOCAB_SIZE].float() / max(temperature, 1e-6)
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)
        idx = torch.cat([idx, nxt], dim=1)
    return [enc.decode(row) for row in idx.tolist()]
