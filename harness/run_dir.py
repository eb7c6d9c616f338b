"""A run directory, and the only code that knows its layout.

    RUN_DIR/
      config.json     the resolved spec; a restart or resubmission checks itself against it
      metrics.jsonl   the trainer's rows (their kinds: harness.records), append-only across restarts
      metrics.arrow   the same rows in columns, a cache that readers rebuild whenever metrics.jsonl changes
      errors.jsonl    one row per failing rank: time, rank, host, step, error, traceback
      jobs.jsonl      one row per Slurm job that ran the run: job id, how it was submitted, log, layout
      exclusions.jsonl  nodes the run moved off (bad preflight, straggler, hung), with the evidence; kept out for good
      stacks/         rank_XXXXX.txt: each rank's Python stacks when a hang was declared
      compile_cache/  torch.compile's caches (unless cluster.compile_cache names a shared directory)
      summary.json    the run's summary (harness.records), rewritten at every stop
      wandb_id        the wandb run that every restart continues
      checkpoints/    step_XXXXXXXX/ directories (harness.train.checkpoint owns what is inside them)
      slurm/          submitit's folder: the job's pickles and logs; eval-slurm/ for --eval jobs
      hf/             the final model as a HuggingFace directory (log.export_hf)

Every JSONL file here is read by `read_jsonl`, which skips a cut-short line (left by exactly the
crash whose story the file tells) with one warning per file, and appended to by `JsonlAppender`,
which first ends such a line so that it stays one skippable line. Small files are replaced
atomically (harness.atomic). The run-state rule (finished, preempted, failed, ...) sits beside the
reader of the rows it is decided from.

This module imports nothing of the harness but harness.atomic, and no torch: everything reads it.

    python -m harness.run_dir outcome RUN_DIR   # how the latest start ended: finished, preempted, ...
"""

import json
import os
import re
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Literal

from harness.atomic import write_text

CONFIG = "config.json"
STEP_DIR = re.compile(r"^step_(\d{8})$")
RUNNING_WINDOW_S = 300  # a run that wrote rows this recently and never stopped is taken to be running


# ----------------------------------------------------------------------------- JSONL files


def read_jsonl(path: Path) -> list[dict]:
    """Every JSON object in `path`, one per line (none for a missing file). Lines that are not whole
    JSON objects (a writer killed mid-line) are skipped with one warning naming the file."""
    rows, bad = [], []
    try:
        f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return rows
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad.append(n)
    if bad:
        where = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        warnings.warn(f"{path}: skipping {len(bad)} truncated or corrupt line(s) (line {where})", stacklevel=2)
    return rows


class JsonlAppender:
    """Appends JSON objects to a file, one line each, in one write() each: rows from several
    processes never interleave, and a row is in the file (if not yet on disk) once write returns."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if os.fstat(self.fd).st_size > 0:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    # A crash mid-write left half a line: end it, so it stays one skippable line.
                    os.write(self.fd, b"\n")

    def write(self, row: dict) -> None:
        os.write(self.fd, (json.dumps(row) + "\n").encode())

    def sync(self) -> None:
        """Make the rows durable (the metrics at a checkpoint cover at least what it saved)."""
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def append_jsonl(path: Path, row: dict) -> None:
    """One durable row: for the rare records (a job, an error) that must survive the crash after them."""
    out = JsonlAppender(path)
    try:
        out.write(row)
        out.sync()
    finally:
        out.close()


# ----------------------------------------------------------------------------- the run-state rule

State = Literal["new", "running", "finished", "preempted", "excluded", "failed", "failed (non-finite loss)",
                "interrupted"]
STOPPED = {"finished": "finished", "preempted": "preempted", "excluded": "excluded",
           "nonfinite": "failed (non-finite loss)"}  # a stop row's reason -> the state (any other: failed)


def run_state(rows: list[dict], now: float | None = None) -> State:
    """How a run stands, from its metrics rows alone (start and stop rows, the same in every schema
    version): the last stop row decides (finished, preempted, excluded: it moved off a bad node,
    failed, failed (non-finite loss)) unless a start came after it; otherwise it is running (rows in
    the last 5 minutes), interrupted (ended without a stop row: killed, or its node died), or new."""
    rows = [r for r in rows if "kind" in r]
    stops = [r for r in rows if r["kind"] == "stop"]
    return state_of([r["time"] for r in rows if r["kind"] == "start"], stops[-1] if stops else None,
                    max((r["time"] for r in rows), default=None), now)


def state_of(starts: list[float], last_stop: dict | None, last_time: float | None, now: float | None = None) -> State:
    """`run_state` from what it reads of the rows: the start rows' times, the last stop row, and the time
    of the last row (None: no rows)."""
    if last_time is None:
        return "new"
    if last_stop and (not starts or max(starts) <= last_stop["time"]):
        return STOPPED.get(last_stop["reason"], "failed")
    now = time.time() if now is None else now
    return "running" if now - last_time < RUNNING_WINDOW_S else "interrupted"


# ----------------------------------------------------------------------------- checkpoint directories


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


def checkpoint_step(path: Path) -> int:
    return int(STEP_DIR.match(path.name).group(1))


def list_checkpoints(root: Path) -> list[Path]:
    """Complete-looking checkpoint directories under `root`, oldest first (temporary ones excluded)."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if STEP_DIR.match(p.name) and p.is_dir()), key=lambda p: p.name)


# ----------------------------------------------------------------------------- the run directory


class RunDir:
    """One run's directory: its spec, its logs, its job and error records, and its checkpoints."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / CONFIG
        self.metrics = self.path / "metrics.jsonl"
        self.metrics_cache = self.path / "metrics.arrow"  # metrics.jsonl in columns (harness.records.columns)
        self.errors = self.path / "errors.jsonl"
        self.jobs = self.path / "jobs.jsonl"
        self.exclusions = self.path / "exclusions.jsonl"
        self.summary = self.path / "summary.json"
        self.checkpoints = self.path / "checkpoints"
        self.stacks = self.path / "stacks"  # each rank's Python stacks when a hang was declared
        self.compile_cache = self.path / "compile_cache"
        self.slurm = self.path / "slurm"  # submitit's folder for training jobs
        self.eval_slurm = self.path / "eval-slurm"  # and for evaluations submitted with --eval
        self.hf = self.path / "hf"  # the final model exported for transformers (log.export_hf)
        self._wandb_id = self.path / "wandb_id"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def exists(self) -> bool:
        return self.config.exists()

    def spec_dict(self) -> dict:
        """config.json as plain JSON (no spec classes; harness.spec.read_spec reads it as a spec)."""
        return json.loads(self.config.read_text())

    # ------------------------------------------------------------------ records

    def record_job(self, **fields: object) -> None:
        append_jsonl(self.jobs, {"time": round(time.time(), 3), **fields})

    def last_job(self) -> dict | None:
        """The newest job recorded by harness.submit or sbatch/train.sh (`last_job`)."""
        return last_job(read_jsonl(self.jobs))

    def record_error(self, **fields: object) -> None:
        append_jsonl(self.errors, {"time": round(time.time(), 3), **fields})

    def last_error(self) -> dict | None:
        errors = read_jsonl(self.errors)
        return errors[-1] if errors else None

    def record_exclusion(self, **fields: object) -> None:
        append_jsonl(self.exclusions, {"time": round(time.time(), 3), **fields})

    def exclusions_of(self, job_id: str, reason: str) -> int:
        """How many times job `job_id` moved off nodes for `reason`."""
        return sum(r.get("job_id") == job_id and r["reason"] == reason for r in read_jsonl(self.exclusions))

    def excluded_hosts(self) -> list[str]:
        """Every node the run has moved off, in the order it did."""
        return list(dict.fromkeys(h for row in read_jsonl(self.exclusions) for h in row["hosts"]))

    def wandb_id(self) -> str:
        """The run's wandb id, created on first use: every restart continues the same wandb run."""
        if self._wandb_id.exists():
            return self._wandb_id.read_text().strip()
        run_id = uuid.uuid4().hex[:12]
        write_text(self._wandb_id, run_id + "\n")
        return run_id

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_dirs(self) -> list[Path]:
        return list_checkpoints(self.checkpoints)

    def newest_checkpoint_step(self) -> int | None:
        found = self.checkpoint_dirs()
        return checkpoint_step(found[-1]) if found else None


def last_job(jobs: list[dict]) -> dict | None:
    """Of a run's job records, the newest job recorded by harness.submit or sbatch/train.sh (not the ends of
    its steps, nor what Slurm's accounting said of it later)."""
    return next((j for j in reversed(jobs) if j.get("event", "submit") in ("submit", "start")), None)


def find_runs(paths: list[str]) -> list[RunDir]:
    """The run directories named, or found one or two levels below the folders named."""
    runs = []
    for p in map(Path, paths):
        if RunDir(p).exists():
            runs.append(RunDir(p))
        elif p.is_dir():
            runs += [RunDir(c.parent) for c in sorted(p.glob(f"*/{CONFIG}"))]
            runs += [RunDir(c.parent) for c in sorted(p.glob(f"*/*/{CONFIG}"))]
        else:
            print(f"warning: {p} is not a run directory", file=sys.stderr)
    return runs


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    if len(argv) != 2 or argv[0] != "outcome":
        sys.exit("usage: python -m harness.run_dir outcome RUN_DIR")
    print(run_state(read_jsonl(RunDir(argv[1]).metrics)))


if __name__ == "__main__":
    main()
