"""Runs as pandas frames: every run's metrics.jsonl and resolved spec (config.json), and a summary per run.

    from analysis.runs import load_runs, summarize
    runs = load_runs(["log/"], pattern="shakespeare-lr*")
    runs[0].curve("train")   # one row per step; a step logged again after a resume keeps the latest restart's row
    runs[0].raw              # every row of every kind and restart, in file order, with `hours` of training time
"""

import argparse
import fnmatch
import functools
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.config import Experiment
from harness.data import DataError, load_manifest
from harness.ledger import Ledger, ledger
from harness.run_dir import RunDir, find_runs, read_jsonl
from harness.run_dir import run_state as log_state


@dataclass
class Run:
    dir: Path
    spec: Experiment
    raw: pd.DataFrame  # every metrics row in file order; columns: kind, step, restart, time, hours, ...
    label: str  # the name shown in legends and tables (the spec's name; the directory added if names repeat)
    _curves: dict[str, pd.DataFrame] = field(default_factory=dict, init=False, repr=False, compare=False)

    def rows(self, kind: str) -> pd.DataFrame:
        """All rows of one kind, from every restart (a resumed run's repeated steps appear twice)."""
        if self.raw.empty:  # keep the axes' columns, so that a run with no rows plots as an empty curve
            return pd.DataFrame(columns=["kind", "step", "tokens", "hours", "restart"])
        selected = self.raw[self.raw["kind"] == kind].reset_index(drop=True)
        # Columns other kinds fill are dropped; an empty selection keeps them all (every one is vacuously empty).
        return selected if selected.empty else selected.dropna(axis=1, how="all")

    @functools.cached_property
    def ledger(self) -> Ledger:
        """Where the run's device-hours went (harness.ledger), from its records."""
        run = RunDir(self.dir)
        return ledger(run.metrics_rows(), read_jsonl(run.jobs))

    def curve(self, kind: str) -> pd.DataFrame:
        """One row per step of `kind` (train, val, hellaswag), sorted by step.

        A run resumed from a checkpoint older than its last logged step logs those steps again; the
        latest restart's row is the one that led to the final model, so it is kept. Computed once per
        kind (every figure and the table ask for the train curve): callers must not modify it.
        """
        if kind not in self._curves:
            df = self.rows(kind)
            if not df.empty:
                df = df.sort_values(["step", "restart"], kind="stable")
                df = df.drop_duplicates("step", keep="last").reset_index(drop=True)
            self._curves[kind] = df
        return self._curves[kind]


def load_run(run_dir: str | Path, label: str | None = None) -> Run:
    """One run directory. A truncated line in its metrics (a run killed mid-write) is skipped with a warning."""
    run = RunDir(run_dir)
    spec = run.read_spec()
    raw = pd.DataFrame(run.metrics_rows())
    if not raw.empty:
        raw["hours"] = training_hours(raw)
        # HellaSwag, checkpoint and stop rows carry no token count: the trainer's own step x batch_tokens.
        by_step = raw["step"] * spec.train.batch_tokens
        raw["tokens"] = raw["tokens"].fillna(by_step) if "tokens" in raw else by_step
    return Run(run.path, spec, raw, label or spec.name)


def load_runs(paths: list[str | Path], pattern: str | None = None) -> list[Run]:
    """Every run under `paths` (run directories, or folders holding them, as harness.status finds them).

    `pattern` (a shell glob) keeps the runs whose name or directory name matches it.
    """
    found = {}
    for run in find_runs([str(p) for p in paths]):
        found.setdefault(run.path.resolve(), run.path)  # each run once, under the path it was first given as
    runs = [load_run(d) for d in found.values()]
    if pattern:
        runs = [r for r in runs if fnmatch.fnmatch(r.spec.name, pattern) or fnmatch.fnmatch(r.dir.name, pattern)]
    names = [r.spec.name for r in runs]
    for r in runs:
        if names.count(r.spec.name) > 1:  # e.g. the same experiment file run into two directories
            r.label = f"{r.spec.name} ({r.dir})"
    return runs


def run_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The command line every analysis command starts from: the runs to read, and a filter on them."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", default=["log"], help="run directories, or folders holding them (default log/)")
    p.add_argument("--runs", metavar="GLOB", help="only runs whose name or directory name matches")
    return p


def runs_or_exit(args: argparse.Namespace) -> list[Run]:
    """The runs that `run_parser`'s arguments name; exits with a message when there are none."""
    runs = load_runs(args.paths, args.runs)
    if not runs:
        sys.exit(f"no runs under {' '.join(args.paths)}" + (f" matching {args.runs!r}" if args.runs else ""))
    return runs


def training_hours(raw: pd.DataFrame) -> pd.Series:
    """Hours of training up to each row: time within each restart, summed over the restarts before it.

    The wait between one restart's last row and the next one's start (in the queue, being requeued)
    is not counted; the steps a resume repeats are, since they were computed twice.
    """
    first = raw.groupby("restart")["time"].transform("min")
    spans = restart_spans(raw)
    before = spans.cumsum() - spans
    return (raw["time"] - first + raw["restart"].map(before)) / 3600


def restart_spans(raw: pd.DataFrame) -> pd.Series:
    """Seconds from the first to the last row of each restart, indexed by restart number."""
    t = raw.groupby("restart")["time"]
    return (t.max() - t.min()).sort_index()


def run_state(raw: pd.DataFrame, now: float | None = None) -> str:
    """harness.status's rule, from the log alone (no Slurm)."""
    return log_state(raw.to_dict("records"), now)


SUMMARY_COLUMNS = ["run", "state", "steps", "tokens", "final_val_loss", "best_val_loss", "best_hellaswag_acc_norm",
                   "median_tokens_per_s", "median_mfu", "wall_hours", "device_hours", "goodput", "restarts", "run_dir"]


def summarize(run: Run) -> dict:
    """One row of the summary table (None where a run has no such rows yet)."""
    train, val, hs = run.curve("train"), run.curve("val"), run.curve("hellaswag")
    raw = run.raw
    starts = run.rows("start")
    spans = restart_spans(raw) if not raw.empty else pd.Series(dtype=float)
    # Device-hours: each restart's time on its own world size (a resume may change it).
    world = starts.set_index("restart")["world_size"] if not starts.empty else pd.Series(dtype=float)
    mfu = [v for v in train["mfu"] if pd.notna(v)] if "mfu" in train else []
    return {
        "run": run.label,
        "state": run_state(raw),
        "steps": int(train["step"].iloc[-1]) if not train.empty else 0,
        "tokens": int(train["tokens"].iloc[-1]) if not train.empty else 0,
        "final_val_loss": float(val["loss"].iloc[-1]) if not val.empty else None,
        "best_val_loss": float(val["loss"].min()) if not val.empty else None,
        "best_hellaswag_acc_norm": float(hs["acc_norm"].max()) if not hs.empty else None,
        "median_tokens_per_s": float(train["tokens_per_s"].median()) if "tokens_per_s" in train else None,
        "median_mfu": float(statistics.median(mfu)) if mfu else None,
        "wall_hours": float(spans.sum() / 3600),
        "device_hours": float((spans * world.reindex(spans.index).fillna(1)).sum() / 3600),
        "goodput": run.ledger.goodput,
        "restarts": max(0, len(starts) - 1),
        "run_dir": str(run.dir),
    }


def summary_table(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame([summarize(r) for r in runs], columns=SUMMARY_COLUMNS)


def data_source(spec: Experiment) -> str:
    """The dataset a run trained on: `source` in the data directory's manifest, else the directory's name."""
    try:
        return load_manifest(spec.data.dir).get("source", Path(spec.data.dir).name)
    except DataError:  # moved or deleted since the run: its name is the best guess
        return Path(spec.data.dir).name
