"""A prepared dataset's manifest.json (written by harness.prepare): reading it, with errors that say how to
prepare what is missing. No torch: harness.submit checks a spec's data with it on a login node."""

import json
from pathlib import Path

from harness.data.sources import NAMED_SOURCES


def prepare_hint(data_dir: Path) -> str:
    """The command that prepares `data_dir`: its source when the directory is named after one (as
    `harness.prepare` names its default output directories), else the choices."""
    if data_dir.name in NAMED_SOURCES:
        return f"python -m harness.prepare {data_dir.name} --out {data_dir}"
    return (f"python -m harness.prepare SOURCE --out {data_dir}   (SOURCE: {', '.join(NAMED_SOURCES)})\n"
            f"  or, from local text: python -m harness.prepare --files 'GLOB' --out {data_dir}")


class DataError(ValueError):
    """Missing, corrupt or mismatched data; the message names the file or field."""


def load_manifest(data_dir: str | Path) -> dict:
    """The manifest of a prepared dataset, with clear errors for a missing or empty directory."""
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"data directory {d} does not exist; prepare it with:\n  {prepare_hint(d)}")
    path = d / "manifest.json"
    if not path.exists():
        what = "is empty" if not any(d.iterdir()) else "has no manifest.json (unprepared or unfinished)"
        raise DataError(f"data directory {d} {what}; prepare it with:\n  {prepare_hint(d)}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: unreadable manifest ({e})") from None
    missing = {"splits", "fingerprint", "tokenizer"} - manifest.keys()
    if missing:
        raise DataError(f"{path}: not a harness manifest (no {', '.join(sorted(missing))})")
    return manifest
