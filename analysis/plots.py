"""Figures and a summary table for one or many runs (an lr sweep overlays on the same axes).

    python -m analysis.plots                                   # every run under log/ -> log/plots/
    python -m analysis.plots log/ --runs 'shakespeare-lr*' --x step --out log/plots/sweep
    python -m analysis.plots log/fineweb_10b --x hours --svg   # training hours, queue time excluded

Writes loss.png, throughput.png, lr.png, evals.png (a panel per eval task some run scored), ledger.png (where
the device-hours went), summary.md and summary.csv; safe to re-run at any time, also while runs are
still writing.
"""

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter, PercentFormatter

from analysis.runs import Run, data_source, run_parser, runs_or_exit, summary_table
from harness.atomic import replacing, write_text

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


def ema(values: pd.Series, points: int) -> pd.Series:
    """Exponential moving average spanning ~1/20 of the curve (bias-corrected at the start)."""
    return values.ewm(span=max(1, min(points // 20, 200)), adjust=True).mean()


def human(value: float, _pos: object = None) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= div:
            return f"{value / div:g}{suffix}"
    return f"{value:g}"


def colors(labels: list[str]) -> dict[str, tuple]:
    """A color per label (a run, or a group of runs), distinct for up to 10 (then 20)."""
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def plotted(runs: list[Run], *kinds: str) -> tuple[dict[str, tuple], list[Run]]:
    """Every run's color (chosen over all runs, so that a run keeps its color in every figure), and the
    runs that have rows of any of `kinds` to plot."""
    return colors([r.label for r in runs]), [r for r in runs if any(not r.curve(kind).empty for kind in kinds)]


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
    return df[df[x] > 0] if log and x != "hours" else df


def save(fig: Figure, out: Path, stem: str, svg: bool) -> list[Path]:
    """Write atomically, so a viewer (or a concurrent re-run) never sees half a file."""
    written = []
    for fmt in ("png", "svg") if svg else ("png",):
        path = out / f"{stem}.{fmt}"
        with replacing(path) as f:
            fig.savefig(f, format=fmt, dpi=DPI)
        written.append(path)
    return written


# ----------------------------------------------------------------------------- figures


def plot_loss(runs: list[Run], x: str) -> Figure | None:
    color, runs = plotted(runs, "train", "val")
    if not runs:
        return None
    fig, (ax,) = new_figure()
    for r in runs:
        train, val = positive_x(r.curve("train"), x, True), positive_x(r.curve("val"), x, True)
        if not train.empty:
            ax.plot(train[x], train["loss"], color=color[r.label], alpha=0.25, lw=0.8)
            ax.plot(train[x], ema(train["loss"], len(train)), color=color[r.label], lw=1.8)
        if not val.empty:
            ax.plot(val[x], val["loss"], color=color[r.label], ls="--", marker="o", ms=5, lw=1.2)
    references = {}
    for r in runs:
        source = data_source(r.spec).lower().replace("_", "-")
        references.update(ref for key, ref in VAL_LOSS_REFERENCES.items() if key in source)
    reference_lines = [ax.axhline(value, color="0.3", ls=style, lw=1.2, label=label)
                       for (label, value), style in zip(references.items(), (":", "-."), strict=False)]
    set_x(ax, x, log=True)
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title("Loss: train (EMA solid, raw faint) and validation (dashed, markers)")
    handles = [Line2D([], [], color=color[r.label], lw=2, label=r.label) for r in runs]
    handles += [Line2D([], [], color="k", lw=1.8, label="train loss (EMA)"),
                Line2D([], [], color="k", lw=0.8, alpha=0.3, label="train loss (raw)"),
                Line2D([], [], color="k", ls="--", marker="o", ms=5, label="val loss")]
    ax.legend(handles=handles + reference_lines, loc="upper right", fontsize=8)
    return fig


def plot_throughput(runs: list[Run], x: str) -> Figure | None:
    color, runs = plotted(runs, "train")
    if not runs:
        return None
    mfu = {r.label: r.curve("train").dropna(subset=["mfu"]) for r in runs if "mfu" in r.curve("train")}
    mfu = {label: df for label, df in mfu.items() if not df.empty}
    missing = [r.label for r in runs if r.label not in mfu]
    if len(missing) == len(runs):
        note = "MFU n/a: no peak FLOP/s known for these devices (CPU)"
    else:
        note = "MFU n/a (no peak FLOP/s known, e.g. CPU): " + ", ".join(missing) if missing else ""
    fig, axes = new_figure(rows=2 if mfu else 1)
    ax_tok = axes[0]
    for r in runs:
        train = r.curve("train")
        if "tokens_per_s" not in train:  # no step was timed (a run that stopped at its first step)
            continue
        ax_tok.plot(train[x], train["tokens_per_s"], color=color[r.label], alpha=0.25, lw=0.8)
        ax_tok.plot(train[x], ema(train["tokens_per_s"], len(train)), color=color[r.label], lw=1.8, label=r.label)
    ax_tok.set_ylabel("tokens / s (all devices)")
    ax_tok.yaxis.set_major_formatter(FuncFormatter(human))
    ax_tok.set_ylim(bottom=0)
    ax_tok.set_title("Throughput (EMA solid, raw faint)" + (f"\n{note}" if note else ""))
    ax_tok.legend(fontsize=8, loc="lower right")
    if mfu:
        ax_mfu = axes[1]
        for label, df in mfu.items():
            ax_mfu.plot(df[x], df["mfu"] * 100, color=color[label], lw=1.5, label=label)
        ax_mfu.set_ylabel("MFU (% of peak bf16 FLOP/s)")
        ax_mfu.yaxis.set_major_formatter(PercentFormatter(decimals=0))
        ax_mfu.set_ylim(bottom=0)
        ax_mfu.legend(fontsize=8, loc="lower right")
    set_x(axes[-1], x)
    return fig


def plot_lr(runs: list[Run], x: str) -> Figure | None:
    color, runs = plotted(runs, "train")
    if not runs:
        return None
    fig, (ax,) = new_figure()
    for r in runs:
        train = r.curve("train")
        ax.plot(train["step"], train["lr"], color=color[r.label], lw=1.8, label=r.label)
    style_lr_axes(ax)
    ax.set_title("Learning rate as logged by the trainer")
    return fig


def style_lr_axes(ax: Axes) -> None:
    """Learning rate against step, as logged (plot_lr) or computed from a spec (analysis.lr_schedule)."""
    set_x(ax, "step")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)


def plot_evals(runs: list[Run], x: str) -> Figure | None:
    """One panel per eval task that some run scored: its headline figure (acc_norm where the task has one,
    else acc) against `x`, with the published reference figures where the task has them; then the eval average
    (the unweighted mean of the headline figures, as the summary's eval_average) of runs that scored several."""
    tasks = list(dict.fromkeys(t for r in runs for t in r.tasks()))
    if not tasks:
        return None
    averages = {r.label: df for r in runs if not (df := positive_x(r.eval_average(), x, True)).empty}
    color = colors([r.label for r in runs])
    panels = len(tasks) + bool(averages)
    cols = 1 if panels < 3 else 2
    fig = Figure(figsize=(FIGSIZE[0] * (1 + (cols > 1) * 0.6), FIGSIZE[1] * 0.7 * -(-panels // cols) + 1),
                 layout="constrained")
    axes = list(fig.subplots(-(-panels // cols), cols, squeeze=False).flat)
    for ax in axes[panels:]:
        ax.set_visible(False)
    for ax, task in zip(axes, tasks, strict=False):
        eval_panel(ax, runs, task, x, color)
    if averages:
        ax = axes[len(tasks)]
        for label, df in averages.items():
            ax.plot(df[x], df["average"], color=color[label], marker="o", ms=4, lw=1.5, label=label)
        set_x(ax, x, log=True)
        ax.set_title("eval average (unweighted mean of acc_norm, else acc)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    return fig


def eval_panel(ax: Axes, runs: list[Run], task: str, x: str, color: dict[str, tuple]) -> None:
    """One task's headline figure against `x`, per run, with its reference lines."""
    metric, top = "acc", 0.0
    for r in runs:
        df = positive_x(r.curve(f"eval/{task}"), x, True)
        if df.empty:
            continue
        metric = "acc_norm" if "acc_norm" in df and df["acc_norm"].notna().any() else "acc"
        n = int(df["examples"].iloc[-1]) if "examples" in df else None
        ax.plot(df[x], df[metric], color=color[r.label], marker="o", ms=4, lw=1.5,
                label=f"{r.label} (n={n:,})" if n else r.label)
        top = max(top, float(df[metric].max()))
    references = TASK_REFERENCES.get(task, [])
    for (label, value), style in zip(references, ("-.", "--", ":"), strict=False):
        ax.axhline(value, color="0.3", ls=style, lw=1.2, label=label)
    set_x(ax, x, log=True)
    if references:
        ax.set_ylim(min(v for _, v in references) - 0.03, max(top, *(v for _, v in references)) + 0.03)
    ax.grid(True, alpha=0.3)
    ax.set_ylabel(f"{task} {metric}")
    ax.set_title(f"{task} ({metric})")
    ax.legend(fontsize=8, loc="upper left")


LEDGER_COLORS = {"productive": "tab:green", "startup": "tab:blue", "eval": "tab:cyan", "checkpoint": "tab:purple",
                 "lost": "tab:red", "shutdown": "tab:gray", "other": "lightgray"}


def plot_ledger(runs: list[Run], x: str) -> Figure | None:
    """Where each run's device-hours went, one horizontal bar per run (readable for a sweep of 20),
    with its goodput (productive / allocated) at the end of the bar and its queue hours beside it."""
    runs = [r for r in runs if r.ledger.allocated_device_hours > 0]
    if not runs:
        return None
    fig = Figure(figsize=(FIGSIZE[0], 1.6 + 0.35 * len(runs)), layout="constrained")
    ax = fig.subplots()
    ax.grid(True, axis="x", alpha=0.3)
    y = np.arange(len(runs))[::-1]
    left = np.zeros(len(runs))
    for category, color in LEDGER_COLORS.items():
        hours = np.array([max(0.0, r.ledger.device_hours[category]) for r in runs])
        ax.barh(y, hours, left=left, color=color, label=category, height=0.7)
        left += hours
    for yi, r, end in zip(y, runs, left, strict=True):
        queue = f", queued {duration(r.ledger.queue_hours * 3600)}" if r.ledger.queue_hours else ""
        ax.text(end, yi, f" {r.ledger.goodput:.0%}{queue}", va="center", fontsize=8)
    ax.set_yticks(y, [r.label for r in runs], fontsize=8)
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


FIGURES: dict[str, Callable[[list[Run], str], Figure | None]] = {
    "loss": plot_loss,
    "throughput": plot_throughput,
    "lr": plot_lr,
    "evals": plot_evals,
    "ledger": plot_ledger,
}


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
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines) + "\n"


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
    args = p.parse_args(argv)

    runs = runs_or_exit(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, plot in FIGURES.items():
        fig = plot(runs, args.x)
        if fig is None:
            # Leave no figure from an earlier invocation that this one's runs do not support.
            for fmt in ("png", "svg"):
                (out / f"{stem}.{fmt}").unlink(missing_ok=True)
            print(f"note: no {stem} rows in these runs; {stem}.png skipped", file=sys.stderr)
            continue
        written += save(fig, out, stem, args.svg)
    table = summary_table(runs)
    written += write_table(table, out)
    print(markdown(table))
    print("wrote " + ", ".join(str(w) for w in written))
    return written


if __name__ == "__main__":
    main()
