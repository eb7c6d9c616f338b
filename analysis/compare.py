"""Runs that differ only in their seed, grouped: each group's mean val-loss curve with a 95% confidence
band, and whether the groups' final and best val losses differ by more than the seeds do.

    python -m analysis.compare log/ --runs 'shakespeare-seed*'        # one group of five seeds -> log/plots/
    python -m analysis.compare log/ --by seed data.dir                  # runs that differ in seed or data: one group

A group is the runs whose specs are equal once the --by fields (default: seed), name and run_dir are
left out (a setting of analysis.sweep). Its runs share the eval schedule, so their val losses are
averaged at equal token counts.
Writes compare.png, compare.md, compare_groups.csv and compare_pairs.csv.

Statistics (scipy.stats): the 95% interval of a mean is Student's t, mean +- t(0.975, n-1) s / sqrt(n).
Two groups (each of n >= 2) are compared by Welch's t-test (no equal-variance assumption) and by
Hedges' g: the difference of means over the pooled standard deviation (Cohen's d), times
1 - 3 / (4 (n_a + n_b) - 9), which removes d's upward bias at small n.
"""

import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from analysis import sweep
from analysis.plots import markdown, new_figure, positive_x, save, set_x
from analysis.runs import Run, run_parser, runs_or_exit, summarize
from analysis.sweep import Setting
from harness.atomic import write_text
from harness.spec import SpecError

CONFIDENCE = 0.95
METRICS = ("final_val_loss", "best_val_loss")
GROUP_COLUMNS = ["group", "metric", "n", "mean", "std", "min", "max", "ci95_low", "ci95_high"]
PAIR_COLUMNS = ["metric", "a", "b", "n_a", "n_b", "mean_b_minus_a", "welch_t", "welch_df", "p_value", "hedges_g"]
FORMATS: dict[str, Callable[[object], str]] = {
    "welch_t": lambda v: f"{v:.2f}", "welch_df": lambda v: f"{v:.1f}", "p_value": lambda v: f"{v:.3g}",
    "hedges_g": lambda v: f"{v:.2f}"}


@dataclass
class Group(Setting):
    summaries: list[dict] = field(default_factory=list)  # analysis.runs.summarize of each run, in the same order

    def values(self, metric: str) -> np.ndarray:
        return np.array([s[metric] for s in self.summaries], dtype=float)


def group_runs(runs: list[Run], by: tuple[str, ...] = ("seed",)) -> list[Group]:
    """Runs with a val loss, grouped by their spec less `by`, name and run_dir (analysis.sweep.settings);
    groups in the order of their first run. A label says what sets a group apart: the fields where the
    groups differ, or with one group, what its runs' names share."""
    scored = []
    for run in runs:
        if run.curve("val").empty:
            print(f"note: {run.label} has no val rows yet; left out of the comparison", file=sys.stderr)
        else:
            scored.append(run)
    return [Group(s.label, s.runs, s.swept, [summarize(r) for r in s.runs]) for s in sweep.settings(scored, by)]


def t_interval(mean: float | pd.Series, sem: float | pd.Series, n: int) -> tuple:
    """The CONFIDENCE interval of a mean of n >= 2 values whose standard error is `sem`: mean +- t sem (a
    standard error of 0, seeds that agree, gives the mean itself, where scipy's t.interval gives NaN)."""
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sem
    return mean - half, mean + half


def spread(values: np.ndarray) -> dict:
    """n, mean, std (n-1 in the denominator), min, max and the 95% interval of the mean."""
    n = len(values)
    std = float(np.std(values, ddof=1)) if n > 1 else float("nan")
    low, high = t_interval(values.mean(), std / np.sqrt(n), n) if n > 1 else (float("nan"),) * 2
    return {"n": n, "mean": float(values.mean()), "std": std, "min": float(values.min()), "max": float(values.max()),
            "ci95_low": float(low), "ci95_high": float(high)}


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    """(mean b - mean a) / pooled std, corrected for small samples; NaN when both groups are constant."""
    na, nb = len(a), len(b)
    pooled = np.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return float("nan")
    return float((b.mean() - a.mean()) / pooled * (1 - 3 / (4 * (na + nb) - 9)))


def group_table(groups: list[Group]) -> pd.DataFrame:
    rows = [{"group": g.label, "metric": m, **spread(g.values(m))} for g in groups for m in METRICS]
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)


def pair_table(groups: list[Group]) -> pd.DataFrame:
    """Every pair of groups with n >= 2 each (a t-test needs a variance on both sides), per metric."""
    rows = []
    for metric in METRICS:
        for ga, gb in combinations([g for g in groups if len(g.runs) >= 2], 2):
            a, b = ga.values(metric), gb.values(metric)
            test = stats.ttest_ind(b, a, equal_var=False)
            rows.append({"metric": metric, "a": ga.label, "b": gb.label, "n_a": len(a), "n_b": len(b),
                         "mean_b_minus_a": float(b.mean() - a.mean()), "welch_t": float(test.statistic),
                         "welch_df": float(test.df), "p_value": float(test.pvalue), "hedges_g": hedges_g(a, b)})
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def mean_curve(group: Group) -> pd.DataFrame:
    """The group's val loss at the token counts all its runs evaluated: columns tokens, n, mean,
    ci95_low, ci95_high, and one per run."""
    losses = pd.concat([r.curve("val").set_index("tokens")["loss"].rename(r.label) for r in group.runs],
                       axis=1, join="inner").sort_index()
    n = losses.shape[1]
    curve = pd.DataFrame({"n": n, "mean": losses.mean(axis=1)}, index=losses.index)
    low, high = t_interval(curve["mean"], losses.sem(axis=1), n) if n > 1 else (np.nan, np.nan)
    curve["ci95_low"], curve["ci95_high"] = low, high
    return pd.concat([curve, losses], axis=1).reset_index(names="tokens")


def check_schedules(group: Group) -> None:
    """Warn when the runs of a group did not end at the same token count (one still running, or killed)."""
    ends = {r.label: int(r.curve("val")["tokens"].iloc[-1]) for r in group.runs}
    if len(set(ends.values())) > 1:
        usual, count = Counter(ends.values()).most_common(1)[0]
        others = [f"{k}: {v:,}" for k, v in ends.items() if v != usual]
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        print(f"warning: group {group.label}: the last val loss is at different token counts ({count} of "
              f"{len(ends)} runs at {usual:,}; {shown}); final values are not comparable", file=sys.stderr)


# ----------------------------------------------------------------------------- figure


def plot_groups(groups: list[Group]) -> Figure:
    """Top: each group's mean val loss with its 95% band, its runs faint. Bottom: each run's final val
    loss (dots) and the group's mean with its 95% interval."""
    color = sweep.colors(groups)
    fig, (curves, finals) = new_figure(rows=2, sharex=False)
    for i, g in enumerate(groups):
        c = color[g.label]
        curve = positive_x(mean_curve(g), "tokens", log=True)
        for r in g.runs:
            curves.plot(curve["tokens"], curve[r.label], color=c, alpha=0.3, lw=0.8)
        curves.plot(curve["tokens"], curve["mean"], color=c, marker="o", ms=4, lw=1.8,
                    label=f"{g.label} (n={len(g.runs)})")
        curves.fill_between(curve["tokens"], curve["ci95_low"], curve["ci95_high"], color=c, alpha=0.2, lw=0)
        final = spread(g.values("final_val_loss"))
        offsets = np.linspace(-0.15, 0.15, len(g.runs)) if len(g.runs) > 1 else [0.0]
        finals.scatter(i + np.asarray(offsets), g.values("final_val_loss"), color=c, alpha=0.6, s=18)
        half = [[final["mean"] - final["ci95_low"]], [final["ci95_high"] - final["mean"]]]
        finals.errorbar([i + 0.3], [final["mean"]], yerr=half if len(g.runs) > 1 else None, color=c, fmt="D",
                        ms=6, capsize=5, lw=1.8)
    set_x(curves, "tokens", log=True)
    curves.set_ylabel("val loss (nats/token)")
    curves.set_title("Val loss: group mean (markers) with 95% confidence band, each run faint")
    curves.legend(fontsize=8, loc="upper right")
    finals.set_xticks(range(len(groups)), [g.label.replace(", ", "\n") for g in groups], fontsize=8)
    finals.set_xlim(-0.6, len(groups) - 0.4)
    finals.set_ylabel("final val loss")
    finals.set_title("Final val loss: each run (dots), group mean and 95% interval (diamond)")
    return fig


# ----------------------------------------------------------------------------- tables and CLI


def comparison_markdown(groups: list[Group], table: pd.DataFrame, pairs: pd.DataFrame, by: tuple[str, ...]) -> str:
    members = "\n".join(f"- {g.label}: {', '.join(r.label for r in g.runs)}" for g in groups)
    pair_text = markdown(pairs, FORMATS) if not pairs.empty else "(fewer than two groups of n >= 2: no pairs)\n"
    return (f"Groups (runs that differ only in {', '.join(by)}):\n\n{members}\n\n"
            f"Final and best val loss per group (95% t interval of the mean):\n\n{markdown(table, FORMATS)}\n"
            f"Pairs (b - a; Welch's t-test; Hedges' g):\n\n{pair_text}")


def main(argv: list[str] | None = None) -> list[Path]:
    p = run_parser("python -m analysis.compare", __doc__)
    p.add_argument("--by", nargs="+", default=["seed"], metavar="FIELD",
                   help="spec fields in which the runs of a group may differ (default: seed)")
    p.add_argument("--out", default="log/plots", help="output folder (default log/plots/)")
    args = p.parse_args(argv)

    runs = runs_or_exit(args)
    try:
        groups = group_runs(runs, tuple(args.by))
    except SpecError as e:
        sys.exit(f"error: {e}")
    if not groups:
        sys.exit("none of these runs has a val loss yet")
    for g in groups:
        check_schedules(g)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table, pairs = group_table(groups), pair_table(groups)
    text = comparison_markdown(groups, table, pairs, tuple(args.by))
    written = save(plot_groups(groups), out, "compare", svg=False)
    for name, content in (("compare.md", text), ("compare_groups.csv", table.to_csv(index=False)),
                          ("compare_pairs.csv", pairs.to_csv(index=False))):
        write_text(out / name, content)
        written.append(out / name)
    print(text)
    print("wrote " + ", ".join(str(w) for w in written))
    return written


if __name__ == "__main__":
    main()
