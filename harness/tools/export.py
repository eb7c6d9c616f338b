"""Export a model to a HuggingFace GPT-2 directory that `transformers` loads offline.

    python -m harness.export log/fineweb_10b --out exports/fineweb_10b      # the run's newest checkpoint
    python -m harness.export log/fineweb_10b/checkpoints/step_00019073 --out exports/step19073

The directory holds config.json, model.safetensors (the tokenizer's 50,257 embedding rows, not the padding),
generation_config.json, the tokenizer (tokenizer.json, converted by transformers from the harness's tiktoken
encoding: the same ids) and a model card (README.md: the run's spec, data, tokens, final losses and eval
scores). Before the directory is put in place, transformers loads it and its logits are compared with the
harness model's on real tokens (fp32; the largest difference is printed and must be below --atol).

Needs the `export` extra (transformers and blobfile): pip install -e '.[export]'.
"""

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from harness.atomic import publish, temporary_name
from harness.data.manifest import load_manifest
from harness.data.reader import ShardedTokenReader
from harness.data.tokenizer import EOT, VOCAB_SIZE, gpt2_encoding
from harness.model.gpt import GPT
from harness.model.io import load_model, to_hf
from harness.model.sources import read_meta
from harness.run_dir import RunDir

CHECK_TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.<|endoftext|>"
              "The quick brown fox jumps over the lazy dog. In 1859, Darwin published On the Origin of Species.")


def require_transformers() -> None:
    """transformers and blobfile (its tiktoken converter writes the rank file through it), or a clear error."""
    missing = [m for m in ("transformers", "blobfile") if not _importable(m)]
    if missing:
        raise SystemExit(f"error: harness.export needs {' and '.join(missing)}: pip install -e '.[export]' "
                         "(or pip install 'transformers>=4.40,<6' 'blobfile>=3,<4')")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def write_weights(model: GPT, out: Path) -> None:
    from safetensors.torch import save_file
    from transformers import GenerationConfig, GPT2Config

    cfg = model.config
    GPT2Config(vocab_size=VOCAB_SIZE, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
               n_head=cfg.n_head, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
               layer_norm_epsilon=1e-5, bos_token_id=EOT, eos_token_id=EOT, tie_word_embeddings=True,
               architectures=["GPT2LMHeadModel"], dtype="float32").save_pretrained(out)
    GenerationConfig(bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT, do_sample=True, top_k=50,
                     max_length=cfg.block_size).save_pretrained(out)
    save_file(to_hf(model, VOCAB_SIZE), out / "model.safetensors", metadata={"format": "pt"})


def write_tokenizer(out: Path, block_size: int) -> None:
    """The harness's GPT-2 encoding as a fast tokenizer (transformers' converter from a tiktoken encoding)."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.tiktoken import convert_tiktoken_to_fast

    with tempfile.TemporaryDirectory() as tmp:
        convert_tiktoken_to_fast(gpt2_encoding(), tmp)
        tok = PreTrainedTokenizerFast(tokenizer_file=str(Path(tmp) / "tokenizer.json"), bos_token="<|endoftext|>",
                                      eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                      model_max_length=block_size, clean_up_tokenization_spaces=False)
    tok.save_pretrained(out)


def real_tokens(info: dict, block_size: int) -> list[int]:
    """A context of real text: the first val tokens of the run's data where it is here, else CHECK_TEXT's."""
    if info["source"] == "checkpoint":
        data = Path(read_meta(Path(info["path"]))["spec"]["data"]["dir"])
        with contextlib.suppress(ValueError, OSError):
            load_manifest(data)
            return ShardedTokenReader(data, "val", batch_size=1, seq_len=block_size).next_batch()[0][0].tolist()
    return gpt2_encoding().encode(CHECK_TEXT, allowed_special="all")[:block_size]


def check(model: GPT, out: Path, atol: float, tokens: list[int]) -> dict:
    """Load `out` with transformers (offline) and compare its tokenizer (on CHECK_TEXT, <|endoftext|> included)
    and its logits on `tokens` with the harness's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = gpt2_encoding().encode(CHECK_TEXT, allowed_special="all")
    hf_ids = AutoTokenizer.from_pretrained(out).encode(CHECK_TEXT)
    if hf_ids != ids:
        raise RuntimeError(f"{out}: the exported tokenizer's ids differ from the harness's on {CHECK_TEXT[:40]!r}...")
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    x = torch.tensor([tokens])
    with torch.no_grad():
        ours = model.float()(x)[0][..., :VOCAB_SIZE]
        theirs = hf(x).logits
    diff = (ours - theirs).abs().max().item()
    if diff > atol:
        raise RuntimeError(f"{out}: transformers' logits differ from the harness model's by {diff:.3g} (> {atol})")
    return {"tokens": len(tokens), "max_logit_diff": diff}


def model_card(info: dict, out: Path) -> str:
    """README.md: what the model is and how it was made, from the run's own records."""
    ckpt = Path(info["path"])
    lines = ["---", "library_name: transformers", "tags: [gpt2, harness]", "---", ""]
    if info["source"] != "checkpoint":
        return "\n".join([*lines, f"# GPT-2 exported from {ckpt}", ""])
    meta = json.loads((ckpt / "meta.json").read_text())
    spec, run = meta["spec"], RunDir(ckpt.parent.parent)
    summary = json.loads(run.summary.read_text()) if run.summary.exists() else {}
    m, t = spec["model"], spec["train"]
    lines += [f"# {spec['name']} at step {meta['step']:,}", "",
              f"A GPT-2 ({m['n_layer']} layers, {m['n_head']} heads, {m['n_embd']} wide, context {m['block_size']}) "
              f"trained with `harness` from `{run.path}`.", "",
              "| | |", "|---|---|",
              f"| data | `{spec['data']['dir']}` |",
              f"| tokens trained | {meta['step'] * t['batch_tokens']:,} ({meta['step']:,} steps of "
              f"{t['batch_tokens']:,}) |"]
    figures = (("train_loss", "final train loss"), ("val_loss", "final val loss"), ("val_bpb", "val bits per byte"))
    for key, what in figures:
        if summary.get(key) is not None:
            lines.append(f"| {what} | {summary[key]:.4f} |")
    if summary.get("evals"):
        lines += ["", "| task | step | examples | acc | acc_norm |", "|---|---|---|---|---|"]
        for task, e in summary["evals"].items():
            norm = f"{e['acc_norm']:.4f}" if e.get("acc_norm") is not None else "-"
            lines.append(f"| {task} | {e['step']:,} | {e['examples']:,} | {e['acc']:.4f} | {norm} |")
        lines.append(f"\nSuite average (unweighted mean of acc_norm where it exists, else acc): "
                     f"{summary['eval_average']:.4f}")
    lines += ["", "## Spec", "", "```json", json.dumps(spec, indent=1), "```", ""]
    return "\n".join(lines)


def export(source: str | Path, out: Path, atol: float = 1e-5) -> dict:
    """Write the HuggingFace directory `out` for `source` (a run, checkpoint or HuggingFace directory)."""
    require_transformers()
    model, info = load_model(source, "cpu")
    model = model.float()
    tmp = temporary_name(out)
    tmp.mkdir(parents=True)
    try:
        write_weights(model, tmp)
        write_tokenizer(tmp, model.config.block_size)
        (tmp / "README.md").write_text(model_card(info, out))
        checked = check(model, tmp, atol, real_tokens(info, model.config.block_size))
        (tmp / "model.safetensors").chmod(0o644)  # safetensors writes it owner-only
        if out.exists():
            shutil.rmtree(out)
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(out), "source": info["path"], "step": info["step"], **checked}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m harness.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a run directory (its newest checkpoint), a checkpoint or a HuggingFace GPT-2 dir")
    p.add_argument("--out", type=Path, required=True, help="the directory to write (replaced if it exists)")
    p.add_argument("--atol", type=float, default=1e-5, help="largest logit difference allowed in the check (fp32)")
    args = p.parse_args(argv)
    try:
        result = export(args.source, args.out, args.atol)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {result['out']} from {result['source']}: transformers loads it; logits within "
          f"{result['max_logit_diff']:.2g} of the harness model's on {result['tokens']} tokens")
    return result


if __name__ == "__main__":
    main()
