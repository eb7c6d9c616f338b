"""What a set of runs varies: its settings (runs that differ only in their seed), the fields that set them
apart, a colour per setting, and the best K runs. The figures, the comparison and the report of a
sweep all read it from here.

    from analysis.sweep import settings
    for s in settings(load_runs(["log/"])):   # optim.lr=0.001 (n=50), optim.lr=0.003 (n=50), ...
        print(s.label, len(s.runs))

A setting is the runs whose specs are equal once the `by` fields (default: seed), name, run_dir and the
derived fields are left out; its label names the fields where the settings differ (the swept fields),
or, with one setting, what its runs' names share.
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from numbers import Real

import numpy as np
import pandas as pd
from matplotlib import colormaps

from analysis.runs import Run
from harness.run_dir import RunDir
from harness.spec import DERIVED, SpecError

# Differ between any two runs (name, run_dir) or follow from other fields: never part of a setting's identity.
IGNORED = ("name", "run_dir", *DERIVED)
# Summary columns where less is better; for the others (an eval task's accuracy, tokens/s) more is.
LOWER_IS_BETTER = ("final_val_loss", "best_val_loss", "train_loss")


@dataclass
class Setting:
    label: str
    runs: list[Run]
    swept: dict[str, object] = field(default_factory=dict)  # the swept fields' values


def settings(runs: list[Run], by: tuple[str, ...] = ("seed",)) -> list[Setting]:
    """Runs grouped by their spec less `by`, name, run_dir and the derived fields; settings in the order of
    their first run. Raises SpecError naming a `by` field that no spec has."""
    left_out = set(by) | set(IGNORED)
    members: dict[str, list[Run]] = {}
    for run in runs:
        fields = run.fields
        unknown = [f for f in by if f not in fields]
        if unknown:
            raise SpecError(f"--by {unknown[0]}: no such field in {RunDir(run.dir).config}")
        key = json.dumps({k: v for k, v in fields.items() if k not in left_out}, sort_keys=True, default=str)
        members.setdefault(key, []).append(run)
    swept = differing_fields([group[0].fields for group in members.values()], left_out)
    out = []
    for group in members.values():
        values = {k: group[0].fields[k] for k in swept}
        label = ", ".join(f"{k}={v}" for k, v in values.items()) or \
            os.path.commonprefix([r.spec.name for r in group]).rstrip("-_.") or group[0].label
        out.append(Setting(label, group, values))
    return out


def differing_fields(specs: list[dict[str, object]], left_out: set[str]) -> list[str]:
    """The dotted spec fields (Run.fields) whose values are not the same in all `specs`, less `left_out`."""
    first = specs[0] if specs else {}
    return sorted({k for spec in specs for k in spec.keys() | first.keys() if spec.get(k) != first.get(k)} - left_out)


def numeric_sweep(found: list[Setting]) -> str | None:
    """The swept field when the settings differ in exactly one field and its values are numbers (optim.lr),
    else None."""
    fields = {k for s in found for k in s.swept}
    if len(fields) != 1 or len(found) < 2:
        return None
    name = fields.pop()
    numbers = all(isinstance(s.swept[name], Real) and not isinstance(s.swept[name], bool) for s in found)
    return name if numbers else None


def colors(found: list[Setting]) -> dict[str, tuple]:
    """A colour per setting label. When the sweep varies one number, along a sequential colour map in the
    order of its values (dark: the smallest), so that the colour reads as the value; otherwise distinct
    colours (tab10, then tab20)."""
    if (name := numeric_sweep(found)) is not None:
        by_value = sorted(found, key=lambda s: s.swept[name])
        shades = np.linspace(0.0, 0.85, len(by_value))  # viridis beyond ~0.85 is too light on white
        return {s.label: colormaps["viridis"](shade) for s, shade in zip(by_value, shades, strict=True)}
    cmap = colormaps["tab10" if len(found) <= 10 else "tab20"]
    return {s.label: cmap(i % cmap.N) for i, s in enumerate(found)}


def ordered(found: list[Setting]) -> list[Setting]:
    """The settings in the order of the swept value where there is one (the legend then reads in order)."""
    name = numeric_sweep(found)
    return sorted(found, key=lambda s: s.swept[name]) if name else found


def best(table: pd.DataFrame, k: int, by: str = "final_val_loss") -> pd.DataFrame:
    """The K best rows of a summary table (analysis.runs.summary_table) by `by`: the least of a loss,
    the most of anything else; rows without a value left out."""
    if by not in table:
        raise SpecError(f"--rank-by {by}: not a column of the summary ({', '.join(table.columns)})")
    return table.dropna(subset=[by]).sort_values(by, ascending=by in LOWER_IS_BETTER, kind="stable").head(k)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command-line options of every command that draws or tabulates a sweep."""
    p.add_argument("--by", nargs="+", default=["seed"], metavar="FIELD",
                   help="spec fields in which the runs of one setting may differ (default: seed)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many runs the best-K view shows (default 5)")
    p.add_argument("--rank-by", default="final_val_loss", metavar="COLUMN",
                   help="the summary column that ranks runs for the best-K view (default final_val_loss)")


def settings_or_exit(runs: list[Run], by: tuple[str, ...]) -> list[Setting]:
    try:
        return settings(runs, by)
    except SpecError as e:
        sys.exit(f"error: {e}")
