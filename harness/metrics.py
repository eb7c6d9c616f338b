"""metrics.jsonl (append-only, one JSON object per line, across restarts) and the wandb mirror of it.

Rows carry a `kind`: start, train, val, hellaswag, sample, checkpoint, stop. Every row has the
step, the wall time and the restart number, so a resumed run's repeated steps stay distinguishable.
"""

import os
import sys
import time
from dataclasses import dataclass
from typing import Literal

from harness.run_dir import JsonlAppender, RunDir


@dataclass
class LogConfig:
    """Where and how often the trainer reports."""

    every: int = 1  # a train row every N steps (reading the loss syncs the device, so GPU runs use ~10)
    wandb: Literal["offline", "online", "disabled"] = "offline"  # wandb mode (WANDB_MODE overrides it)
    wandb_project: str = "harness"  # wandb project
    wandb_entity: str = ""  # wandb team or user (empty: your default)

    def check(self) -> list[str]:
        """Problems with these settings, each naming its field."""
        return [] if self.every > 0 else [f"every: must be positive, got {self.every}"]


class MetricsLog:
    """Appends rows to the run's metrics.jsonl, one line each, as they happen; only rank 0 writes."""

    def __init__(self, run_dir: RunDir, restart: int):
        self.restart = restart
        self.out = JsonlAppender(run_dir.metrics)
        self.wandb = None

    def write(self, kind: str, **fields: object) -> dict:
        row = {"kind": kind, **fields, "restart": self.restart, "time": round(time.time(), 3)}
        self.out.write(row)
        if self.wandb is not None and kind in ("train", "val", "hellaswag"):
            values = {f"{kind}/{k}": v for k, v in fields.items() if isinstance(v, int | float) and k != "step"}
            self.wandb.log(values, step=fields["step"])
        return row

    def sync(self) -> None:
        """Make the rows durable (at checkpoints: the metrics then cover at least what was saved)."""
        self.out.sync()

    def close(self) -> None:
        self.out.close()
        if self.wandb is not None:
            self.wandb.finish()


def start_wandb(log: MetricsLog, cfg: LogConfig, run_dir: RunDir, name: str, config: dict) -> str:
    """Start (or continue, after a requeue) the run's wandb run; returns its id, kept in the run dir."""
    run_id = run_dir.wandb_id()
    mode = os.environ.get("WANDB_MODE", cfg.wandb)
    if mode == "disabled":
        return run_id
    import wandb

    try:
        log.wandb = wandb.init(project=cfg.wandb_project, entity=cfg.wandb_entity or None, name=name, id=run_id,
                               resume="allow", dir=str(run_dir.path), mode=mode, config=config)
    except Exception as e:  # wandb is a mirror; the run must not die because it is unreachable
        print(f"WARNING: wandb ({mode}) did not start: {e}; metrics.jsonl is still written", file=sys.stderr)
    return run_id
