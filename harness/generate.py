"""Sample text from a model.

    python -m harness.generate log/shakespeare --prompt "ROMEO:" --max-new-tokens 200 --num-samples 2
"""

import argparse

import torch

from harness.checkpoint import load_model
from harness.tokenizer import VOCAB_SIZE, gpt2_encoding


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="run directory, checkpoint directory, or HuggingFace GPT-2 directory")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    model, info = load_model(args.model, args.device)
    step = f" at step {info['step']}" if info["step"] is not None else ""
    print(f"# {info['path']}{step}")
    gen = torch.Generator().manual_seed(args.seed)
    for i, text in enumerate(sample(model, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                                    args.num_samples, gen)):
        print(f"----- sample {i + 1}\n{text}")


if __name__ == "__main__":
    main()
