"""Runs as pandas frames: every run's metrics.jsonl and resolved spec (config.json), and a summary per run.

    from analysis.runs import load_runs, summarize
    runs = load_runs(["log/"], pattern="shakespeare-lr*")
    runs[0].curve("train")   # one row per step; a step logged again after a resume keeps the latest restart's row
    runs[0].raw              # every row of every kind and restart, in file order, with `hours` of training time
"""

import argparse
import fnmatch
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness import records
from harness.data.manifest import DataError, load_manifest
from harness.ledger import Ledger
from harness.run_dir import RunDir, find_runs, read_jsonl
from harness.spec import Experiment, read_spec


@dataclass
class Run:
    dir: Path
    spec: Experiment
    raw: pd.DataFrame  # every metrics row in file order; columns: kind, step, restart, time, hours, ...
    label: str  # the name shown in legends and tables (the spec's name; the directory added if names repeat)
    metrics: list[dict] = field(default_factory=list, repr=False)  # the rows as read (harness.records.read)
    _curves: dict[str, pd.DataFrame] = field(default_factory=dict, init=False, repr=False, compare=False)

    def rows(self, kind: str) -> pd.DataFrame:
        """All rows of one kind, from every restart (a resumed run's repeated steps appear twice)."""
        if self.raw.empty:  # keep the axes' columns, so that a run with no rows plots as an empty curve
            return pd.DataFrame(columns=["kind", "step", "tokens", "hours", "restart"])
        selected = self.raw[self.raw["kind"] == kind].reset_index(drop=True)
        # Columns other kinds fill are dropped; an empty selection keeps them all (every one is vacuously empty).
        return selected if selected.empty else selected.dropna(axis=1, how="all")

    @functools.cached_property
    def summary(self) -> records.Summary:
        """The run's summary (harness.records), from its records: the one the trainer and status show."""
        return records.summarize(self.metrics, read_jsonl(RunDir(self.dir).jobs))

    @property
    def ledger(self) -> Ledger:
        """Where the run's device-hours went (harness.ledger)."""
        return Ledger(**self.summary.ledger)

    def tasks(self) -> list[str]:
        """The eval tasks this run scored, in the order it first scored them."""
        evals = self.rows("eval")
        return list(dict.fromkeys(evals["task"])) if not evals.empty else []

    def eval_average(self) -> pd.DataFrame:
        """The run's eval average (records.headline's figure, unweighted over tasks) at each step where every task
        it scored was scored: x columns and "average"; empty with fewer than two tasks."""
        tasks = self.tasks()
        if len(tasks) < 2:
            return pd.DataFrame()
        curves = [self.curve(f"eval/{t}") for t in tasks]
        steps = set.intersection(*(set(c["step"]) for c in curves))
        heads = [c.set_index("step").apply(records.headline, axis=1).rename(t) for c, t in zip(curves, tasks,
                                                                                              strict=True)]
        df = pd.concat(heads, axis=1).loc[sorted(steps)]
        x = curves[0].set_index("step").loc[sorted(steps)].drop(columns=["acc", "acc_norm", "task"], errors="ignore")
        return x.assign(average=df.mean(axis=1)).reset_index()

    def curve(self, kind: str) -> pd.DataFrame:
        """One row per step of `kind` (train, val, or "eval/TASK"), sorted by step.

        A run resumed from a checkpoint older than its last logged step logs those steps again; the
        latest restart's row is the one that led to the final model, so it is kept. Computed once per
        kind (every figure and the table ask for the train curve): callers must not modify it.
        """
        if kind not in self._curves:
            base, _, task = kind.partition("/")
            df = self.rows(base)
            if task and not df.empty:
                df = df[df["task"] == task].dropna(axis=1, how="all")
            if not df.empty:
                df = df.sort_values(["step", "restart"], kind="stable")
                df = df.drop_duplicates("step", keep="last").reset_index(drop=True)
            self._curves[kind] = df
        return self._curves[kind]


def load_run(run_dir: str | Path, label: str | None = None) -> Run:
    """One run directory. A truncated line in its metrics (a run killed mid-write) is skipped with a warning."""
    run = RunDir(run_dir)
    spec = read_spec(run)
    rows = records.read(run)
    raw = pd.DataFrame(rows)
    if not raw.empty:
        raw["hours"] = training_hours(raw)
        # Checkpoint and stop rows carry no token count: the trainer's own step x batch_tokens.
        by_step = raw["step"] * spec.train.batch_tokens
        raw["tokens"] = raw["tokens"].fillna(by_step) if "tokens" in raw else by_step
    return Run(run.path, spec, raw, label or spec.name, rows)


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


SUMMARY_COLUMNS = ["run", "state", "steps", "tokens", "final_val_loss", "best_val_loss", "eval_average",
                   "median_tokens_per_s", "median_mfu", "wall_hours", "device_hours", "goodput", "restarts", "run_dir"]


def summarize(run: Run) -> dict:
    """One row of the summary table: the run's summary (harness.records), and each task's latest headline
    figure (acc_norm where the task has one, else acc) in a column of its own."""
    s = run.summary
    return {
        "run": run.label, "state": s.state, "steps": s.steps, "tokens": s.tokens, "final_val_loss": s.val_loss,
        "best_val_loss": s.best_val_loss, "eval_average": s.eval_average, "median_tokens_per_s": s.tokens_per_s,
        "median_mfu": s.mfu, "wall_hours": s.wall_hours, "device_hours": s.device_hours, "goodput": s.goodput,
        "restarts": s.restarts, "run_dir": str(run.dir), **{task: e["headline"] for task, e in s.evals.items()},
    }


def summary_table(runs: list[Run]) -> pd.DataFrame:
    """The summary table; each eval task scored by some run adds a column after eval_average."""
    tasks = list(dict.fromkeys(t for r in runs for t in r.summary.evals))
    at = SUMMARY_COLUMNS.index("eval_average") + 1
    return pd.DataFrame([summarize(r) for r in runs], columns=SUMMARY_COLUMNS[:at] + tasks + SUMMARY_COLUMNS[at:])


def data_source(spec: Experiment) -> str:
    """The dataset a run trained on: `source` in the data directory's manifest, else the directory's name."""
    try:
        return load_manifest(spec.data.dir).get("source", Path(spec.data.dir).name)
    except DataError:  # moved or deleted since the run: its name is the best guess
        return Path(spec.data.dir).name
