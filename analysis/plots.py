"""Figures and a summary table for one run or a sweep of hundreds.

    python -m analysis.plots                                   # every run under log/ -> log/plots/
    python -m analysis.plots log/ --runs 'shakespeare-lr*' --x step --out log/plots/sweep
    python -m analysis.plots log/fineweb_10b --x hours --svg   # training hours, queue time excluded
    python -m analysis.plots log/ --top 10 --rank-by hellaswag_nanogpt   # the best-K view by another column

Writes loss.png, throughput.png, lr.png, evals.png (a panel per eval task some run scored), ledger.png (where
the device-hours went), best.png (the K best runs), summary.md and summary.csv; safe to re-run at any time,
also while runs are still writing.

A sweep is drawn by setting (analysis.sweep: the runs that differ only in their seed): one colour and one
legend entry per value of the swept field (a sequential colour map when it is one number, such as the
learning rate), the seeds of a setting as their mean with a band from the lowest to the highest. A run
alone is drawn raw (faint) and smoothed. Train curves are drawn from each run's trace (analysis.runs:
bins of equal width on a log axis), so a figure holds a few thousand points however long the runs.
"""

import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter, PercentFormatter

from analysis import sweep
from analysis.runs import Run, data_source, run_parser, runs_or_exit, summary_table
from harness.atomic import replacing, write_text
from harness.spec import SpecError

# OpenAI's GPT-2 124M on each dataset's validation split, drawn where a run's data matches.
VAL_LOSS_REFERENCES = {
    "openwebtext": ("OpenAI GPT-2 124M on OpenWebText val (3.12)", 3.12),
    "fineweb-edu": ("OpenAI GPT-2 124M on FineWeb-Edu val (~3.29)", 3.29),
}
# Published figures drawn beside a task's curve. hellaswag_nanogpt: acc_norm, completion-style scoring on all
# 10,042 validation rows (harness/eval/hellaswag.py).
TASK_REFERENCES = {
    # hellaswag: lm-evaluation-harness's scoring (harness/eval/tasks/hellaswag.py) of OpenAI's GPT-2 124M, acc_norm.
    "hellaswag": [("OpenAI GPT-2 124M, lm-eval (0.3114)", 0.3114), ("chance, 4 endings (0.25)", 0.25)],
    "hellaswag_nanogpt": [
        ("GPT-3 Small 125M (0.337)", 0.337),
        ("OpenAI GPT-2 124M (0.2955)", 0.2955),
        ("chance, 4 endings (0.25)", 0.25),
    ],
}
X_LABELS = {
    "step": "step (optimizer updates)",
    "tokens": "tokens trained",
    "hours": "training hours (wall clock, queue time excluded)",
}
FIGSIZE, DPI = (8, 5), 100  # 800 x 500 px PNGs of ~30-80 KB
MAX_LINES = 20  # settings drawn each in its own colour with a legend entry; more are drawn run by run
POINTS = 6000  # run by run, each run's line is thinned so that a figure draws about this many points
LABEL_CHARS = 70  # a legend entry longer than this is cut


def human(value: float, _pos: object = None) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= div:
            return f"{value / div:g}{suffix}"
    return f"{value:g}"


def new_figure(rows: int = 1, sharex: bool = True) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(FIGSIZE[0], FIGSIZE[1] + 2.5 * (rows - 1)), layout="constrained")
    axes = fig.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0]
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
    return fig, list(axes)


def set_x(ax: Axes, x: str, log: bool = False) -> None:
    """Label the x axis; call after plotting. Log scale for step and tokens when asked (not for hours)."""
    ax.set_xlabel(X_LABELS[x])
    if log and x != "hours":
        ax.set_xscale("log")
        low, high = ax.get_xlim()
        # Plain numbers instead of 2x10^3; minor ticks labelled only when few decades leave room.
        ax.xaxis.set_major_formatter(FuncFormatter(human))
        ax.xaxis.set_minor_formatter(FuncFormatter(human) if high / low < 30 else NullFormatter())
    elif x == "tokens":
        ax.xaxis.set_major_formatter(FuncFormatter(human))


def positive_x(df: pd.DataFrame, x: str, log: bool) -> pd.DataFrame:
    """A log axis cannot show x=0 (the evaluation before the first step)."""
    return df[df[x] > 0] if log and x != "hours" and not df.empty else df


def save(fig: Figure, out: Path, stem: str, svg: bool) -> list[Path]:
    """Write atomically, so a viewer (or a concurrent re-run) never sees half a file."""
    written = []
    for fmt in ("png", "svg") if svg else ("png",):
        path = out / f"{stem}.{fmt}"
        with replacing(path) as f:
            fig.savefig(f, format=fmt, dpi=DPI)
        written.append(path)
    return written


# ----------------------------------------------------------------------------- what is drawn: lines


@dataclass
class Line:
    """What one legend entry stands for: a setting's runs (drawn as their mean and range), or one run."""

    label: str
    color: tuple
    runs: list[Run]


@dataclass
class Lines:
    """The lines of a figure, and how their colours are told: a legend entry each, or (run by run, when
    the settings are too many for a legend) a colour bar of the swept value."""

    lines: list[Line]
    colorbar: ScalarMappable | None = None
    colorbar_label: str = ""

    def __iter__(self) -> Iterator[Line]:
        return iter(self.lines)


def lines(runs: list[Run], by: tuple[str, ...] = ("seed",)) -> Lines:
    """A line per setting (analysis.sweep), coloured by the swept value, in its order; with more than
    MAX_LINES settings, a line per run coloured along the first swept number."""
    found = sweep.ordered(sweep.settings(runs, by))
    if len(found) <= MAX_LINES:
        color = sweep.colors(found)
        return Lines([Line(cut(s.label if len(s.runs) == 1 else f"{s.label} (n={len(s.runs)})"), color[s.label],
                           s.runs) for s in found])
    numbers = [k for k, v in found[0].swept.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:  # nothing to order the colours by: one colour per run, no legend
        cmap = colormaps["tab20"]
        return Lines([Line(r.label, cmap(i % cmap.N), [r]) for i, s in enumerate(found) for r in s.runs])
    name = numbers[0]
    values = [s.swept[name] for s in found]
    norm = (LogNorm if min(values) > 0 and max(values) / min(values) > 20 else Normalize)(min(values), max(values))
    mappable = ScalarMappable(norm, colormaps["viridis"])
    return Lines([Line(r.label, mappable.to_rgba(s.swept[name]), [r]) for s in found for r in s.runs],
                 mappable, name)


def cut(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


def across(runs: list[Run], column: str, x: str, kind: str | None = None) -> pd.DataFrame:
    """`column` of `runs` lined up (their traces bin by bin, or their `kind` curves step by step): columns
    x (the runs' mean), mean, low and high (the lowest and highest run), n (the runs that have a value)."""
    frames = [r.trace if kind is None else r.curve(kind).set_index("step", drop=False) for r in runs]
    frames = [f for f in frames if column in f and not f.empty]
    if not frames:
        return pd.DataFrame(columns=["x", "mean", "low", "high", "n"])
    keys = np.unique(np.concatenate([f.index.to_numpy() for f in frames]))  # the bins (steps) of any run
    values, xs = (np.full((len(frames), len(keys)), np.nan) for _ in range(2))
    for i, f in enumerate(frames):
        at = np.searchsorted(keys, f.index.to_numpy())
        values[i, at], xs[i, at] = f[column].to_numpy(float), f[x].to_numpy(float)
    with warnings.catch_warnings():  # a bin no run has a value in: NaN, dropped below
        warnings.simplefilter("ignore", RuntimeWarning)
        out = pd.DataFrame({"x": np.nanmean(xs, axis=0), "mean": np.nanmean(values, axis=0),
                            "low": np.nanmin(values, axis=0), "high": np.nanmax(values, axis=0),
                            "n": (~np.isnan(values)).sum(axis=0)})
    return out.dropna(subset=["mean"]).sort_values("x")


def draw(ax: Axes, line: Line, column: str, x: str, log: bool, points: int, kind: str | None = None,
         **style: object) -> bool:
    """`column` of a line's runs: the mean, and the runs' range as a band (a single run has none). Returns
    whether anything was drawn."""
    m = across(line.runs, column, x, kind)
    if log and x != "hours":
        m = m[m["x"] > 0]
    if m.empty:
        return False
    m = m.iloc[::max(1, len(m) // points)] if points else m
    ax.plot(m["x"], m["mean"], color=line.color, **({"lw": 1.8} | style))
    if len(line.runs) > 1:
        ax.fill_between(m["x"], m["low"], m["high"], color=line.color, alpha=0.15, lw=0)
    return True


def per_line(drawn: Lines) -> int:
    """Points per run line when the figure is drawn run by run (0: no thinning)."""
    return 0 if drawn.colorbar is None and len(drawn.lines) <= MAX_LINES else max(20, POINTS // len(drawn.lines))


def legend(ax: Axes, drawn: Lines, extra: list | None = None, loc: str = "upper right") -> None:
    """A legend entry per line (or the colour bar, run by run), then `extra` handles (styles, references)."""
    handles = [] if drawn.colorbar else [Line2D([], [], color=line.color, lw=2, label=line.label) for line in drawn]
    handles += extra or []
    if drawn.colorbar:
        ax.figure.colorbar(drawn.colorbar, ax=ax, label=drawn.colorbar_label)
    if handles:
        ax.legend(handles=handles, loc=loc, fontsize=8, ncols=2 if len(handles) > 12 else 1)


def with_rows(runs: list[Run], *columns: str) -> list[Run]:
    """The runs whose trace has any of `columns` (those with train rows to draw)."""
    return [r for r in runs if any(c in r.trace and r.trace[c].notna().any() for c in columns)]


# ----------------------------------------------------------------------------- figures


def plot_loss(runs: list[Run], x: str, by: tuple[str, ...] = ("seed",)) -> Figure | None:
    drawn = lines([r for r in runs if with_rows([r], "loss") or not r.curve("val").empty], by)
    if not drawn.lines:
        return None
    fig, (ax,) = new_figure()
    points, several = per_line(drawn), any(len(line.runs) > 1 for line in drawn)
    for line in drawn:
        if len(line.runs) == 1 and not points:  # a run alone: its raw loss faint, bin by bin with its range
            draw(ax, line, "loss", x, True, 0, alpha=0.25, lw=0.8)
            trace = line.runs[0].trace
            if "loss_min" in trace and not (t := positive_x(trace, x, True)).empty:
                ax.fill_between(t[x], t["loss_min"], t["loss_max"], color=line.color, alpha=0.12, lw=0)
        draw(ax, line, "loss_ema", x, True, points, lw=1.8 if not points else 0.8)
        draw(ax, line, "loss", x, True, points, kind="val", ls="--", marker="o", ms=4 if several else 5, lw=1.2)
    references = {}
    for r in runs:
        source = data_source(r.spec).lower().replace("_", "-")
        references.update(ref for key, ref in VAL_LOSS_REFERENCES.items() if key in source)
    reference_lines = [ax.axhline(value, color="0.3", ls=style, lw=1.2, label=label)
                       for (label, value), style in zip(references.items(), (":", "-."), strict=False)]
    set_x(ax, x, log=True)
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title("Loss: train EMA (solid; the seeds' mean, their range as a band) and val (dashed)" if several
                 else "Loss: train (EMA solid, raw faint) and validation (dashed, markers)")
    styles = [Line2D([], [], color="k", lw=1.8, label="train loss (EMA)"),
              Line2D([], [], color="k", ls="--", marker="o", ms=5, label="val loss")]
    if several:
        styles.append(Line2D([], [], color="k", lw=6, alpha=0.15, label="lowest to highest seed"))
    else:
        styles.insert(1, Line2D([], [], color="k", lw=0.8, alpha=0.3, label="train loss (raw)"))
    legend(ax, drawn, styles + reference_lines)
    return fig


def plot_throughput(runs: list[Run], x: str, by: tuple[str, ...] = ("seed",)) -> Figure | None:
    drawn = lines(with_rows(runs, "tokens_per_s"), by)
    if not drawn.lines:
        return None
    with_mfu = {id(r) for r in with_rows(runs, "mfu")}
    missing = [r.label for line in drawn for r in line.runs if id(r) not in with_mfu]
    if len(missing) == sum(len(line.runs) for line in drawn):
        note = "MFU n/a: no peak FLOP/s known for these devices (CPU)"
    else:
        note = "MFU n/a (no peak FLOP/s known, e.g. CPU): " + cut(", ".join(missing)) if missing else ""
    fig, axes = new_figure(rows=2 if with_mfu else 1)
    points = per_line(drawn)
    for line in drawn:
        if len(line.runs) == 1 and not points:
            draw(ax=axes[0], line=line, column="tokens_per_s", x=x, log=False, points=0, alpha=0.25, lw=0.8)
        draw(axes[0], line, "tokens_per_s_ema", x, False, points)
        if with_mfu:
            draw(axes[1], Line(line.label, line.color, [r for r in line.runs if id(r) in with_mfu]), "mfu", x, False,
                 points, lw=1.5)
    axes[0].set_ylabel("tokens / s (all devices)")
    axes[0].yaxis.set_major_formatter(FuncFormatter(human))
    axes[0].set_ylim(bottom=0)
    several = any(len(line.runs) > 1 for line in drawn)
    axes[0].set_title(("Throughput (EMA; the seeds' mean, their range as a band)" if several else
                       "Throughput (EMA solid, raw faint)") + (f"\n{note}" if note else ""))
    legend(axes[0], drawn, loc="lower right")
    if with_mfu:
        axes[1].set_ylabel("MFU (fraction of peak bf16 FLOP/s)")
        axes[1].yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
        axes[1].set_ylim(bottom=0)
    set_x(axes[-1], x)
    return fig


def plot_lr(runs: list[Run], x: str, by: tuple[str, ...] = ("seed",)) -> Figure | None:
    drawn = lines(with_rows(runs, "lr"), by)
    if not drawn.lines:
        return None
    fig, (ax,) = new_figure()
    for line in drawn:
        draw(ax, line, "lr", "step", False, per_line(drawn))
    style_lr_axes(ax, legend=False)
    ax.set_title("Learning rate as logged by the trainer")
    legend(ax, drawn)
    return fig


def style_lr_axes(ax: Axes, legend: bool = True) -> None:
    """Learning rate against step, as logged (plot_lr) or computed from a spec (analysis.lr_schedule)."""
    set_x(ax, "step")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.set_ylim(bottom=0)
    if legend:
        ax.legend(fontsize=8)


def plot_evals(runs: list[Run], x: str, by: tuple[str, ...] = ("seed",)) -> Figure | None:
    """One panel per eval task that some run scored: its headline figure (acc_norm where the task has one,
    else acc) against `x`, with the published reference figures where the task has them; then the eval average
    (the unweighted mean of the headline figures, as the summary's eval_average) of runs that scored several."""
    tasks = list(dict.fromkeys(t for r in runs for t in r.tasks()))
    if not tasks:
        return None
    drawn = lines(runs, by)
    averages = {id(r): df for r in runs if not (df := positive_x(r.eval_average(), x, True)).empty}
    panels = len(tasks) + bool(averages)
    cols = 1 if panels < 3 else 2
    fig = Figure(figsize=(FIGSIZE[0] * (1 + (cols > 1) * 0.6), FIGSIZE[1] * 0.7 * -(-panels // cols) + 1),
                 layout="constrained")
    axes = list(fig.subplots(-(-panels // cols), cols, squeeze=False).flat)
    for ax in axes[panels:]:
        ax.set_visible(False)
    for ax, task in zip(axes, tasks, strict=False):
        eval_panel(ax, drawn, task, x)
    if averages:
        ax = axes[len(tasks)]
        for line in drawn:  # a setting's runs: the mean of their averages at each step
            frames = [averages[id(r)] for r in line.runs if id(r) in averages]
            if frames:
                m = pd.concat(frames).groupby("step")[[x, "average"]].mean()
                ax.plot(m[x], m["average"], color=line.color, marker="o", ms=4, lw=1.5)
        set_x(ax, x, log=True)
        ax.set_title("eval average (unweighted mean of acc_norm, else acc)")
        ax.grid(True, alpha=0.3)
        legend(ax, Lines([line for line in drawn if any(id(r) in averages for r in line.runs)], drawn.colorbar,
                         drawn.colorbar_label), loc="upper left")
    return fig


def eval_panel(ax: Axes, drawn: Lines, task: str, x: str) -> None:
    """One task's headline figure against `x`, a line per setting (its runs' mean and range), with the task's
    published reference figures."""
    kind = f"eval/{task}"
    scored = [c for line in drawn for r in line.runs if not (c := r.curve(kind)).empty]
    metric = "acc_norm" if any("acc_norm" in c and c["acc_norm"].notna().any() for c in scored) else "acc"
    examples = max((int(c["examples"].iloc[-1]) for c in scored if "examples" in c), default=None)
    for line in drawn:
        draw(ax, line, metric, x, True, 0, kind=kind, marker="o", ms=4, lw=1.5)
    top = max(float(c[metric].max()) for c in scored if metric in c)
    references = TASK_REFERENCES.get(task, [])
    extra = [ax.axhline(value, color="0.3", ls=style, lw=1.2, label=label)
             for (label, value), style in zip(references, ("-.", "--", ":"), strict=False)]
    set_x(ax, x, log=True)
    if references:
        ax.set_ylim(min(v for _, v in references) - 0.03, max(top, *(v for _, v in references)) + 0.03)
    ax.set_ylabel(f"{task} {metric}")
    ax.set_title(f"{task} ({metric}" + (f", n={examples:,}" if examples else "") + ")")
    ax.grid(True, alpha=0.3)
    legend(ax, Lines([line for line in drawn if any(not r.curve(kind).empty for r in line.runs)], drawn.colorbar,
                     drawn.colorbar_label), extra, loc="upper left")


LEDGER_COLORS = {"productive": "tab:green", "startup": "tab:blue", "eval": "tab:cyan", "checkpoint": "tab:purple",
                 "lost": "tab:red", "shutdown": "tab:gray", "other": "lightgray"}


def plot_ledger(runs: list[Run], x: str, by: tuple[str, ...] = ("seed",)) -> Figure | None:
    """Where the device-hours went, one horizontal bar per run (per setting, summed over its runs, when
    there are more than MAX_LINES runs), with its goodput (productive / allocated) at the end of the bar
    and its queue hours beside it."""
    runs = [r for r in runs if r.ledger.allocated_device_hours > 0]
    if not runs:
        return None
    bars = [(r.label, [r]) for r in runs]
    if len(runs) > MAX_LINES:
        found = sweep.ordered(sweep.settings(runs, by))
        bars = [(f"{s.label} ({len(s.runs)} runs)", s.runs) for s in found] if len(found) <= 2 * MAX_LINES else \
            [(f"all {len(runs)} runs", runs)]
    fig = Figure(figsize=(FIGSIZE[0], 1.6 + 0.35 * len(bars)), layout="constrained")
    ax = fig.subplots()
    ax.grid(True, axis="x", alpha=0.3)
    y = np.arange(len(bars))[::-1]
    left = np.zeros(len(bars))
    for category, color in LEDGER_COLORS.items():
        hours = np.array([sum(max(0.0, r.ledger.device_hours[category]) for r in members) for _, members in bars])
        ax.barh(y, hours, left=left, color=color, label=category, height=0.7)
        left += hours
    for yi, (_, members), end in zip(y, bars, left, strict=True):
        allocated = sum(r.ledger.allocated_device_hours for r in members)
        productive = sum(r.ledger.device_hours["productive"] for r in members)
        queued = sum(r.ledger.queue_hours for r in members)
        queue = f", queued {duration(queued * 3600)}" if queued else ""
        ax.text(end, yi, f" {productive / allocated:.0%}{queue}", va="center", fontsize=8)
    ax.set_yticks(y, [cut(label) for label, _ in bars], fontsize=8)
    ax.set_xlabel("device-hours (allocated; queue time not included)")
    ax.set_xlim(right=left.max() * 1.25)
    ax.set_title("Where the device-hours went (goodput = productive / allocated)")
    fig.legend(*ax.get_legend_handles_labels(), ncols=len(LEDGER_COLORS), fontsize=8, loc="outside lower center")
    return fig


def duration(seconds: float) -> str:
    """12 s, 4.5 min, 3.2 h, 2.1 d: a queue wait as a person says it."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def plot_best(runs: list[Run], x: str, top: int = 5, rank_by: str = "final_val_loss") -> Figure | None:
    """The `top` best runs by a summary column (analysis.sweep.best), each in its own colour, over the
    range of all the runs (grey): None when there are no more runs than that."""
    if len(runs) <= top:
        return None
    table = summary_table(runs)
    chosen = sweep.best(table, top, rank_by)
    if chosen.empty:
        return None
    fig, (ax,) = new_figure()
    everyone = Line(f"all {len(runs)} runs: lowest to highest", (0.5, 0.5, 0.5, 1.0), runs)
    spread = across(runs, "loss_ema", x)
    spread = spread[spread["x"] > 0] if x != "hours" else spread
    ax.fill_between(spread["x"], spread["low"], spread["high"], color=everyone.color, alpha=0.25, lw=0)
    cmap, shown = colormaps["tab10"], []
    for rank, (i, row) in enumerate(chosen.iterrows()):
        line = Line(cut(f"{rank + 1}. {row['run']} ({rank_by} {row[rank_by]:.4f})"), cmap(rank % 10), [runs[i]])
        draw(ax, line, "loss_ema", x, True, 0, lw=1.5)
        draw(ax, line, "loss", x, True, 0, kind="val", ls="--", marker="o", ms=4, lw=1.0)
        shown.append(line)
    set_x(ax, x, log=True)
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(f"The {len(shown)} best of {len(runs)} runs by {rank_by}: train (EMA solid), val (dashed)")
    grey = Line2D([], [], color=everyone.color, lw=6, alpha=0.25, label=everyone.label)
    legend(ax, Lines(shown), [grey])
    return fig


FIGURES: dict[str, Callable[[list[Run], str, tuple[str, ...]], Figure | None]] = {
    "loss": plot_loss,
    "throughput": plot_throughput,
    "lr": plot_lr,
    "evals": plot_evals,
    "ledger": plot_ledger,
}


def figures(runs: list[Run], x: str, by: tuple[str, ...] = ("seed",), top: int = 5,
            rank_by: str = "final_val_loss") -> dict[str, Figure | None]:
    """Every figure of `runs` by its file stem; None where the runs have nothing to draw."""
    return {stem: plot(runs, x, by) for stem, plot in FIGURES.items()} | {"best": plot_best(runs, x, top, rank_by)}


# ----------------------------------------------------------------------------- table


SUMMARY_FORMATS: dict[str, Callable[[object], str]] = {
    "tokens": lambda v: f"{int(v):,}", "median_tokens_per_s": lambda v: f"{v:,.0f}", "median_mfu": lambda v: f"{v:.1%}",
    "wall_hours": lambda v: f"{v:.3f}", "device_hours": lambda v: f"{v:.3f}", "goodput": lambda v: f"{v:.1%}"}


def formatted(table: pd.DataFrame, formats: dict[str, Callable[[object], str]]) -> pd.DataFrame:
    """Every cell as text, as the tables show it: `formats` per column, other floats to 4 decimals,
    missing values as "-". The summary's run_dir column is left to the csv (the paths are long)."""
    shown = table.drop(columns=["run_dir"], errors="ignore")

    def cell(column: str, v: object) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "-"
        if column in formats:
            return formats[column](v)
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    return pd.DataFrame({c: [cell(c, v) for v in shown[c]] for c in shown.columns}, columns=shown.columns)


def markdown(table: pd.DataFrame, formats: dict[str, Callable[[object], str]] = SUMMARY_FORMATS) -> str:
    shown = formatted(table, formats)
    lines_ = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines_ += ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines_) + "\n"


def write_table(table: pd.DataFrame, out: Path) -> list[Path]:
    written = []
    for name, text in (("summary.md", markdown(table)), ("summary.csv", table.to_csv(index=False))):
        write_text(out / name, text)
        written.append(out / name)
    return written


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> list[Path]:
    p = run_parser("python -m analysis.plots", __doc__)
    p.add_argument("--out", default="log/plots", help="output folder (default log/plots/)")
    p.add_argument("--x", choices=list(X_LABELS), default="tokens", help="x axis of loss, throughput and evals")
    p.add_argument("--svg", action="store_true", help="write SVGs besides the PNGs")
    sweep.add_arguments(p)
    args = p.parse_args(argv)

    runs = runs_or_exit(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        drawn = figures(runs, args.x, tuple(args.by), args.top, args.rank_by)
    except SpecError as e:
        sys.exit(f"error: {e}")
    written = []
    for stem, fig in drawn.items():
        if fig is None:
            # Leave no figure from an earlier invocation that this one's runs do not support.
            for fmt in ("png", "svg"):
                (out / f"{stem}.{fmt}").unlink(missing_ok=True)
            why = f"no more than --top {args.top} runs" if stem == "best" else f"no {stem} rows in these runs"
            print(f"note: {why}; {stem}.png skipped", file=sys.stderr)
            continue
        written += save(fig, out, stem, args.svg)
    table = summary_table(runs)
    written += write_table(table, out)
    print(markdown(table))
    print("wrote " + ", ".join(str(w) for w in written))
    return written


if __name__ == "__main__":
    main()
