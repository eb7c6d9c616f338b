"""Sample text from a model.

    python -m harness.generate log/shakespeare --prompt "ROMEO:" --max-new-tokens 200 --num-samples 2
"""

import argparse

import torch

from harness.model.io import load_model
from harness.model.sample import sample


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
