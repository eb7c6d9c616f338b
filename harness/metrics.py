"""metrics.jsonl (append-only, one JSON object per line, across restarts) and the wandb mirror of it.

Rows carry a `kind`: start, train, val, hellaswag, sample, checkpoint, stop. Every row has the
step, the wall time and the restart number, so a resumed run's repeated steps stay distinguishable.
"""

import json
import os
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class LogConfig:
    """Where and how often the trainer reports."""

    every: int = 1  # a train row every N steps (reading the loss syncs the device, so GPU runs use ~10)
    wandb: Literal["offline", "online", "disabled"] = "offline"  # wandb mode (WANDB_MODE overrides it)
    wandb_project: str = "harness"  # wandb project
    wandb_entity: str = ""  # wandb team or user (empty: your default)


class MetricsLog:
    """Appends rows to metrics.jsonl, flushed per line; only rank 0 writes."""

    def __init__(self, path: Path, restart: int):
        self.path, self.restart = path, restart
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run
        if self.f.tell() > 0:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    # A crash mid-write left half a line: end it, so it stays one skippable line.
                    self.f.write("\n")
        self.wandb = None

    def write(self, kind: str, **fields: object) -> dict:
        row = {"kind": kind, **fields, "restart": self.restart, "time": round(time.time(), 3)}
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()
        if self.wandb is not None and kind in ("train", "val", "hellaswag"):
            values = {f"{kind}/{k}": v for k, v in fields.items() if isinstance(v, int | float) and k != "step"}
            self.wandb.log(values, step=fields["step"])
        return row

    def sync(self) -> None:
        """Make the rows durable (at checkpoints: the metrics then cover at least what was saved)."""
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(path: Path) -> list[dict]:
    """All rows (none for a run that has not logged yet); a truncated or corrupt line (a run killed
    mid-write) is skipped with a warning."""
    rows = []
    if not path.exists():
        return rows
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{n}: skipping a truncated or corrupt line", stacklevel=2)
                continue
            if isinstance(row, dict) and "kind" in row:
                rows.append(row)
    return rows


def history(path: Path) -> tuple[int, dict | None]:
    """What a new start needs from the earlier ones: how many there were, and the last stop row."""
    starts, last_stop = 0, None
    for row in read_metrics(path):
        starts += row["kind"] == "start"
        last_stop = row if row["kind"] == "stop" else last_stop
    return starts, last_stop


def start_wandb(log: MetricsLog, cfg: LogConfig, run_dir: Path, name: str, config: dict) -> str:
    """Start (or continue, after a requeue) the run's wandb run; returns its id, kept in the run dir."""
    id_file = run_dir / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
    id_file.write_text(run_id + "\n")
    mode = os.environ.get("WANDB_MODE", cfg.wandb)
    if mode == "disabled":
        return run_id
    import wandb

    try:
        log.wandb = wandb.init(project=cfg.wandb_project, entity=cfg.wandb_entity or None, name=name, id=run_id,
                               resume="allow", dir=str(run_dir), mode=mode, config=config)
    except Exception as e:  # wandb is a mirror; the run must not die because it is unreachable
        print(f"WARNING: wandb ({mode}) did not start: {e}; metrics.jsonl is still written", file=sys.stderr)
    return run_id
