"""The one way harness replaces a file: readers see it whole, and it survives a crash.

Write under a temporary name beside the target, fsync the file, rename it over the target, fsync
the directory. The rename is atomic within a directory, so a reader (a status command, a plot, a
resumed run) finds the old file or the new one, never half of one, even if the writer is killed.
The two fsyncs make the new file survive a node crash: without them the rename can reach the disk
before the data, leaving an empty file under the final name.

Small files go through `write_text`; writers that stream (shards, plots, progress records) through
`replacing`; checkpoint directories, written file by file, through `publish`.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def fsync_dir(path: Path) -> None:
    """Make the renames and creations inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """A hidden name beside `path`, unique per process so that concurrent writers never share one."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def publish(tmp: Path, final: Path) -> None:
    """Rename a complete, fsync'd temporary file or directory into place, durably."""
    os.replace(tmp, final)
    fsync_dir(final.parent)


@contextmanager
def replacing(path: Path, mode: str = "wb", durable: bool = True) -> Iterator[IO]:
    """A file to stream into that replaces `path` when the block ends without an exception; if it
    raises, `path` is untouched and the temporary file removed. `durable=False` is for a cache, which its
    reader checks and rebuilds: the replacement is as atomic, but nothing waits for the disk (a cache of
    each of hundreds of runs, written by one harness.status, would wait for it hundreds of times)."""
    tmp = temporary_name(path)
    try:
        with open(tmp, mode) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if durable:
            publish(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically and durably."""
    with replacing(path, "w") as f:
        f.write(text)
