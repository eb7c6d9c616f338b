"""Runs as pandas frames: every run's metrics rows (harness.records.columns, cached beside metrics.jsonl) and
resolved spec (config.json), and a summary per run.

    from analysis.runs import load_runs, summarize
    runs = load_runs(["log/"], pattern="shakespeare-lr*")
    runs[0].curve("train")   # one row per step; a step logged again after a resume keeps the latest restart's row
    runs[0].trace            # the train curve in bins for drawing (a few hundred points, the same bins for every run)
    runs[0].raw              # every row of every kind and restart, in file order, with `hours` of training time

A loaded run holds its summary, its small curves (val, eval tasks, samples) and its trace; its full
train curve and raw rows are read again when asked for, so that a sweep of hundreds of runs of
thousands of rows each fits in a few hundred MB.
"""

import argparse
import fnmatch
import functools
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness import records
from harness.data.manifest import DataError, load_manifest
from harness.ledger import Ledger
from harness.run_dir import RunDir, find_runs, read_jsonl
from harness.spec import Experiment, flatten, read_spec

# The trace's bins: equal widths on a log axis of steps, BINS_PER_DECADE per factor of ten, so every step
# up to ~40 has a bin of its own and a run of 5,000 steps draws in ~250 points, 500,000 in ~450.
BINS_PER_DECADE = 100
READERS = 4  # threads that load runs
EMPTY = ["kind", "step", "tokens", "hours", "restart"]  # the columns of a curve with no rows
SMALL_KINDS = ("val", "sample")  # curves kept with the run (and each "eval/TASK"); train is read again when asked for


@dataclass
class Run:
    dir: Path
    spec: Experiment
    label: str  # the name shown in legends and tables (the spec's name; the directory added if names repeat)
    summary: records.Summary  # the run's summary (harness.records): the one the trainer and status show
    trace: pd.DataFrame = field(repr=False)  # the train curve in bins (see `trace`)
    _curves: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False, compare=False)

    @functools.cached_property
    def fields(self) -> dict[str, object]:
        """The spec as dotted names ({"optim.lr": 0.002, ...}: harness.spec.flatten), computed once."""
        return flatten(self.spec)

    def columns(self) -> records.Rows:
        """Every metrics row, in columns, read again (from the cache beside metrics.jsonl)."""
        return records.columns(RunDir(self.dir))

    @functools.cached_property
    def raw(self) -> pd.DataFrame:
        """Every metrics row in file order; columns: kind, step, restart, time, hours, tokens, and the fields
        of the kinds present (rows of the kinds kept whole, such as start and stop, have only those)."""
        rows = self.columns()
        return frame(rows, np.arange(len(rows)), self.spec)

    def rows(self, kind: str) -> pd.DataFrame:
        """All rows of one kind, from every restart (a resumed run's repeated steps appear twice)."""
        selected = self.raw[self.raw["kind"] == kind].reset_index(drop=True)
        # Columns other kinds fill are dropped; an empty selection keeps them all (every one is vacuously empty).
        return selected if selected.empty else selected.dropna(axis=1, how="all")

    @property
    def ledger(self) -> Ledger:
        """Where the run's device-hours went (harness.ledger)."""
        return Ledger(**self.summary.ledger)

    def tasks(self) -> list[str]:
        """The eval tasks this run scored, in the order it first scored them."""
        return [kind.partition("/")[2] for kind in self._curves if kind.startswith("eval/")]

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
        """One row per step of `kind` (train, val, sample, or "eval/TASK"), sorted by step.

        A run resumed from a checkpoint older than its last logged step logs those steps again; the
        latest restart's row is the one that led to the final model, so it is kept. Computed once per
        kind: callers must not modify it."""
        if kind not in self._curves:
            if kind.startswith("eval/") or kind in SMALL_KINDS:  # read at load: the run has none
                return pd.DataFrame(columns=EMPTY)
            self._curves[kind] = curves(self.columns(), self.spec, [kind])[kind]
        return self._curves[kind]


def hours(rows: records.Rows) -> np.ndarray:
    """Hours of training up to each row: time within each restart, summed over the restarts before it.

    The wait between one restart's last row and the next one's start (in the queue, being requeued)
    is not counted; the steps a resume repeats are, since they were computed twice."""
    restart, t = rows["restart"], rows["time"]
    out, before = np.zeros(len(rows)), 0.0
    for r in np.unique(restart):
        mine = restart == r
        first, last = t[mine].min(), t[mine].max()
        out[mine] = t[mine] - first + before
        before += last - first
    return out / 3600


def frame(rows: records.Rows, index: np.ndarray, spec: Experiment, hours_: np.ndarray | None = None,
          kind: str | None = None) -> pd.DataFrame:
    """The rows at `index` (all of `kind`, if given) as a frame, with the columns some of them have, `hours`,
    and `tokens` (checkpoint and stop rows carry none: the trainer's own step x batch_tokens)."""
    if not len(index):  # keep the axes' columns, so that a run with no rows of a kind plots as an empty curve
        return pd.DataFrame(columns=EMPTY)
    names = records.fields_of(kind) if kind else records.SCHEMA.names
    data = {name: values for name in names if not pd.isna(values := rows[name][index]).all()}
    data["hours"] = (hours(rows) if hours_ is None else hours_)[index]
    by_step = data["step"] * spec.train.batch_tokens
    data["tokens"] = np.where(pd.isna(data["tokens"]), by_step, data["tokens"]) if "tokens" in data else by_step
    return pd.DataFrame(data)


def curves(rows: records.Rows, spec: Experiment, kinds: list[str], elapsed: np.ndarray | None = None) \
        -> dict[str, pd.DataFrame]:
    """One frame per kind of `kinds` ("eval/TASK" for a task), each one row per step (the latest row of a
    step), sorted by step. `elapsed`: the rows' hours, if computed already."""
    elapsed, out = hours(rows) if elapsed is None else elapsed, {}
    for kind in kinds:
        base, _, task = kind.partition("/")
        out[kind] = frame(rows, rows.kept(base, rows["task"] == task if task else None), spec, elapsed, base)
    return out


def ema(values: pd.Series, points: int) -> pd.Series:
    """Exponential moving average spanning ~1/20 of the curve (bias-corrected at the start)."""
    return values.ewm(span=max(1, min(points // 20, 200)), adjust=True).mean()


def trace(rows: records.Rows, elapsed: np.ndarray, batch_tokens: int) -> pd.DataFrame:
    """The train curve (one row per step) in bins for drawing: indexed by bin (BINS_PER_DECADE per decade
    of steps, the same bins for every run), with columns step, tokens and hours (bin means); loss and
    tokens_per_s, with the least and most of their bin (loss_min, loss_max, ...) and their moving average
    over the whole curve (loss_ema, ...); lr and mfu. Bin means leave out missing values."""
    index = rows.kept("train")
    if not len(index):
        return pd.DataFrame(columns=["step", "tokens", "hours", "loss", "loss_min", "loss_max", "loss_ema"])
    step = rows["step"][index].astype(float)
    tokens = rows["tokens"][index].astype(float)
    data = {"step": step, "tokens": np.where(np.isnan(tokens), step * batch_tokens, tokens), "hours": elapsed[index]}
    for name in ("loss", "tokens_per_s", "lr", "mfu"):
        values = rows[name][index].astype(float)
        if not np.isnan(values).all():
            data[name] = values
    for name in ("loss", "tokens_per_s"):
        if name in data:
            data[f"{name}_ema"] = ema(pd.Series(data[name]), len(index)).to_numpy()
    bins = np.floor(np.log10(np.maximum(step, 1)) * BINS_PER_DECADE).astype(int)  # ascending, as the steps
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    out = {}
    with np.errstate(invalid="ignore"):  # a bin where a value is missing in every row: NaN
        for name, values in data.items():
            present = ~np.isnan(values)
            out[name] = np.add.reduceat(np.where(present, values, 0.0), starts) / np.add.reduceat(present, starts)
    for name in ("loss", "tokens_per_s"):
        if name in data:
            out[f"{name}_min"] = np.fmin.reduceat(data[name], starts)
            out[f"{name}_max"] = np.fmax.reduceat(data[name], starts)
    return pd.DataFrame(out, index=bins[starts])


def load_run(run_dir: str | Path, label: str | None = None, spec: Experiment | None = None) -> Run:
    """One run directory: its spec, summary, small curves and trace, from one read of its rows. A line of its
    metrics cut short (a run killed mid-write) is skipped with a warning."""
    run = RunDir(run_dir)
    spec = read_spec(run) if spec is None else spec
    rows = records.columns(run)
    elapsed = hours(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows.dicts("eval")))
    small = curves(rows, spec, [*SMALL_KINDS, *(f"eval/{t}" for t in tasks)], elapsed)
    return Run(run.path, spec, label or spec.name, records.summarize(rows, read_jsonl(run.jobs)),
               trace(rows, elapsed, spec.train.batch_tokens), {kind: df for kind, df in small.items() if not df.empty})


def load_runs(paths: list[str | Path], pattern: str | None = None) -> list[Run]:
    """Every run under `paths` (run directories, or folders holding them, as harness.status finds them).

    `pattern` (a shell glob) keeps the runs whose name or directory name matches it.
    """
    found = {}
    for run in find_runs([str(p) for p in paths]):
        found.setdefault(run.path.resolve(), run.path)  # each run once, under the path it was first given as
    specs = {d: read_spec(RunDir(d)) for d in found.values()}
    chosen = [d for d, spec in specs.items()
              if not pattern or fnmatch.fnmatch(spec.name, pattern) or fnmatch.fnmatch(d.name, pattern)]
    with ThreadPoolExecutor(READERS) as pool:  # reading and parsing files let the other threads go on
        runs = list(pool.map(lambda d: load_run(d, spec=specs[d]), chosen))
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
