"""HellaSwag (validation split, 10,042 examples), scored completion style as build-nanogpt and the
GPT-2 anchors do it.

Each example is a context and 4 candidate endings. For each ending the model reads
`encode(ctx) + encode(" " + ending)` and we take the cross-entropy of the ending tokens only.
`acc` picks the ending with the lowest summed loss, `acc_norm` the lowest mean loss per ending token
(longer endings are not penalised for having more tokens). OpenAI's GPT-2 124M scores
acc 0.2859 / acc_norm 0.2955 this way; lm-evaluation-harness normalises by characters instead, so
its numbers are not comparable.

A sequence longer than the model's context (block_size + 1 tokens, the last being only a target)
loses tokens from the left of the context: the ending is what is scored, and the tokens next to it
matter most. Only with a context window shorter than an ending (HellaSwag's longest is 96 tokens,
with contexts up to 114) does the ending lose its own first tokens, which are then not scored.

The data comes from the original `hellaswag_val.jsonl`, a `datasets.save_to_disk` directory, the eval
data directory that `python -m harness.prepare eval` writes (the same rows), or a cached download of the first.
"""

import contextlib
import os
import urllib.request
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn import functional as F

from harness.atomic import replacing
from harness.data.eval_data import read_rows
from harness.data.sources import json_lines
from harness.data.tokenizer import gpt2_encoding
from harness.distributed import DistEnv, on_main
from harness.eval.registry import Task

URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
VAL_EXAMPLES = 10_042
IGNORE = -100  # target id of positions whose loss is not scored (context and padding)


class HellaSwagDataError(ValueError):
    """Missing, unreadable or malformed HellaSwag data; the message names the file and the row."""


# ----------------------------------------------------------------------------- data


def cache_file() -> Path:
    """Where the downloaded validation split is kept: $HARNESS_CACHE or ~/.cache/harness."""
    root = os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness"
    return Path(root) / "hellaswag" / "hellaswag_val.jsonl"


def download(dest: Path | None = None, timeout_s: float = 5.0) -> Path:
    """The cached jsonl, downloaded first if missing. The file appears only once complete and valid,
    so concurrent or interrupted downloads never leave a half-written file to be read."""
    dest = dest or cache_file()
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(dest) as f:
            # A short timeout: compute nodes often have no internet, and then we should say so at once.
            with urllib.request.urlopen(URL, timeout=timeout_s) as response:
                f.write(response.read())
            f.flush()
            n = len(_read_jsonl(Path(f.name), 0))
            if n != VAL_EXAMPLES:
                raise HellaSwagDataError(f"{URL}: {n} examples, expected {VAL_EXAMPLES}")
    except OSError as e:  # no network, DNS failure, HTTP error, timeout
        raise HellaSwagDataError(
            f"HellaSwag is not in the cache ({dest}) and could not be downloaded from {URL}: {e}. "
            "Without internet, copy hellaswag_val.jsonl (or a datasets.save_to_disk directory of the "
            "validation split) to this machine and pass it: `python -m harness.eval hellaswag ... --data PATH`, "
            "or `--eval.hellaswag_data PATH` when training."
        ) from None
    return dest


def load_examples(path: str | None, limit: int = 0) -> list[dict]:
    """The validation examples in file order, each {"ctx", "endings" (4), "label" (int)}; only the
    first `limit` when it is positive. `path`: a jsonl file, a `datasets.save_to_disk` directory, or
    None for the cached download. Rows in error messages count from 1 (a jsonl file's line number)."""
    if limit < 0:
        raise ValueError(f"hellaswag limit must be >= 0, got {limit}")
    p = Path(path) if path else download()
    if (p / "manifest.json").is_file():  # the suite's prepared eval data: its hellaswag.jsonl
        return [_example(row, p / "hellaswag.jsonl", i) for i, row in enumerate(read_rows(p, "hellaswag", limit), 1)]
    if p.is_dir():
        return _read_saved(p, limit)
    if p.is_file():
        return _read_jsonl(p, limit)
    raise HellaSwagDataError(f"{p}: no such file or directory (expected hellaswag_val.jsonl "
                             "or a datasets.save_to_disk directory)")


def _read_jsonl(path: Path, limit: int) -> list[dict]:
    examples = []
    for line_no, row in json_lines(path, HellaSwagDataError):
        examples.append(_example(row, path, line_no))
        if len(examples) == limit:
            break
    return examples


def _read_saved(path: Path, limit: int) -> list[dict]:
    import datasets  # slow to import; only this format needs it

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise HellaSwagDataError(f"{path}: not a datasets.save_to_disk directory ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "validation" not in ds:
            raise HellaSwagDataError(f"{path}: no 'validation' split (found {', '.join(ds)})")
        ds = ds["validation"]
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    return [_example(row, path, i) for i, row in enumerate(ds.to_list(), 1)]


def _example(row: object, path: Path, row_no: int) -> dict:
    where = f"{path}: row {row_no}"
    if not isinstance(row, dict):
        raise HellaSwagDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in ("ctx", "endings", "label"):
        if key not in row:
            raise HellaSwagDataError(f"{where}: missing field {key!r}")
    ctx, endings, label = row["ctx"], row["endings"], row["label"]
    if not isinstance(ctx, str) or not ctx.strip():
        raise HellaSwagDataError(f"{where}: 'ctx' must be a non-empty string")
    if not isinstance(endings, list) or len(endings) != 4 or not all(isinstance(e, str) for e in endings):
        raise HellaSwagDataError(f"{where}: 'endings' must be a list of 4 strings")
    # The original jsonl has integer labels, datasets' copy the strings "0".."3".
    if isinstance(label, str) and label.strip().isdigit():
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < 4:
        raise HellaSwagDataError(f"{where}: 'label' must be 0..3, got {row['label']!r}")
    return {"ctx": ctx, "endings": list(endings), "label": label}


# ----------------------------------------------------------------------------- scoring


def _sequence(ctx: list[int], ending: list[int], block_size: int) -> tuple[list[int], list[int]]:
    """Model inputs and targets for one ending; targets are IGNORE except on the ending tokens."""
    tokens = ctx + ending
    # The last token is only a target, so block_size + 1 tokens fit; cut what is left over from the left.
    cut = max(0, len(tokens) - (block_size + 1))
    tokens, first = tokens[cut:], len(ctx) - cut  # `first`: index of the first ending token
    targets = [t if i + 1 >= first else IGNORE for i, t in enumerate(tokens[1:])]
    return tokens[:-1], targets


@torch.no_grad()
def ending_losses(model: torch.nn.Module, examples: list[dict], batch_examples: int = 8,
                  autocast: contextlib.AbstractContextManager | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of each ending's tokens, and their number: two (len(examples), 4) CPU tensors."""
    if batch_examples < 1:
        raise ValueError(f"batch_examples must be >= 1, got {batch_examples}")
    enc = gpt2_encoding()
    block_size = model.config.block_size
    device = next(model.parameters()).device
    sums, counts = [], []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(examples), batch_examples):
            rows = []
            for ex in examples[start : start + batch_examples]:
                # encode_ordinary: a literal "<|endoftext|>" in the text is text, not the separator.
                ctx = enc.encode_ordinary(ex["ctx"])
                rows += [_sequence(ctx, enc.encode_ordinary(" " + e), block_size) for e in ex["endings"]]
            # Right padding: the model is causal, so padding after a sequence cannot change its logits,
            # and padded positions have IGNORE targets, so they add nothing to the losses.
            T = max(len(x) for x, _ in rows)
            x = torch.zeros(len(rows), T, dtype=torch.long)
            y = torch.full((len(rows), T), IGNORE, dtype=torch.long)
            for i, (xi, yi) in enumerate(rows):
                x[i, : len(xi)], y[i, : len(yi)] = torch.tensor(xi), torch.tensor(yi)
            # The scored positions, found on the CPU: nonzero() on a GPU would wait for the device.
            r, c = (y != IGNORE).nonzero(as_tuple=True)
            with autocast or contextlib.nullcontext():
                logits, _ = model(x.to(device))
            # Cross-entropy over all logit columns, as in training, but only at the scored positions:
            # no float32 copy of the logits of every context and padding position.
            r, c, targets = r.to(device), c.to(device), y[r, c].to(device)
            loss = F.cross_entropy(logits[r, c].float(), targets, reduction="none")
            sums.append(torch.zeros(len(rows), dtype=torch.float64, device=device).index_add_(0, r, loss.double()))
            counts.append((y != IGNORE).sum(1))
    finally:
        model.train(was_training)
    if not sums:
        return torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.long)
    return torch.cat(sums).view(-1, 4).cpu(), torch.cat(counts).view(-1, 4)


def score_examples(model: torch.nn.Module, examples: list[dict], batch_examples: int = 8,
                   autocast: contextlib.AbstractContextManager | None = None) -> list[tuple[int, int]]:
    """Per example, the ending chosen by summed loss and by mean loss per token: (pred_sum, pred_norm)."""
    sums, counts = ending_losses(model, examples, batch_examples, autocast)
    pred_sum = sums.argmin(1).tolist()
    pred_norm = (sums / counts).argmin(1).tolist()
    return list(zip(pred_sum, pred_norm, strict=True))


_EXAMPLES: dict[tuple[str | None, int], list[dict]] = {}  # loaded once per process, not every evaluation


def cached_examples(data: str | None, limit: int, env: DistEnv) -> list[dict]:
    """`load_examples`, once per process. Collective when `data` is None: the download happens once,
    on rank 0, and if it fails every rank raises rather than waits. A trainer can call it at start-up
    to fail fast on missing data instead of at its first evaluation."""
    key = (data, limit)
    if key not in _EXAMPLES:
        if data is None:
            on_main(download, env)
        _EXAMPLES[key] = load_examples(data, limit)
    return _EXAMPLES[key]


def evaluate_hellaswag(model: torch.nn.Module, data: str | None, limit: int, env: DistEnv,
                       autocast: contextlib.AbstractContextManager | None = None, batch_examples: int = 8) -> dict:
    """Collective: every rank calls it. Returns {"examples", "acc", "acc_norm"} over the first `limit`
    examples (0: all)."""
    return score(model, cached_examples(data, limit, env), env, autocast, batch_examples)


def score(model: torch.nn.Module, examples: list[dict], env: DistEnv,
          autocast: contextlib.AbstractContextManager | None = None, batch_examples: int = 8) -> dict:
    """Collective: rank r scores examples r, r+W, r+2W, ...; {"examples", "acc", "acc_norm"} over all."""
    mine = examples[env.rank :: env.world_size]
    preds = score_examples(model, mine, batch_examples, autocast)
    correct = sum(p == ex["label"] for (p, _), ex in zip(preds, mine, strict=True))
    correct_norm = sum(p == ex["label"] for (_, p), ex in zip(preds, mine, strict=True))
    # The only collective, at the end: no rank waits on another while scoring.
    counts = torch.tensor([correct, correct_norm, len(mine)], dtype=torch.int64)
    if env.distributed:
        dist.all_reduce(counts, group=env.cpu_group)
    correct, correct_norm, n = counts.tolist()
    return {"examples": n, "acc": correct / max(n, 1), "acc_norm": correct_norm / max(n, 1)}


TASK = Task("hellaswag_nanogpt", load=lambda data, limit, env: cached_examples(data or None, limit, env), score=score)
