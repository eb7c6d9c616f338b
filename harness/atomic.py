"""Files that readers see whole: written under a temporary name beside the target, then renamed over it.

A rename within a directory is atomic, so a reader (a status command, a plot, a resumed run) finds the
old file or the new one, never half of one, even if the writer is killed.
"""

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a hidden temporary file renamed over it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
