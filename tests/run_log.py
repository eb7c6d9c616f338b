"""Reading a run's metrics.jsonl in tests: its rows, its progress, and its losses per step."""

from pathlib import Path

from harness.metrics import read_metrics


def rows(run_dir: Path, kind: str | None = None) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if kind is None or r["kind"] == kind]


def last_step(run_dir: Path) -> int:
    return max((r["step"] for r in rows(run_dir, "train")), default=0)


def train_losses(run_dir: Path, restart: int | None = None) -> dict[int, float]:
    """Each step's loss from the latest restart that ran it (a resumed run repeats a few steps), or
    only the steps that `restart` ran."""
    return {r["step"]: r["loss"] for r in rows(run_dir, "train") if restart is None or r["restart"] == restart}
