"""One self-contained HTML page about a set of runs, to copy off an offline cluster and open on a laptop:
for a sweep, what it varies and its best K runs; the summary table, the seed comparison, every figure
(analysis.plots: a sweep drawn by setting), and for each run its spec where it differs from the others',
its state, its text samples and links to its files.

    python -m analysis.report                                         # every run under log/ -> log/report.html
    python -m analysis.report log/ --runs 'shakespeare-seed*' --out log/seeds.html
    python -m analysis.report log/ --top 10 --rank-by best_val_loss   # the best-K table and figure by another column

Figures are inline PNGs (base64 data URIs) and the style sheet is inline; there are no scripts and
nothing is fetched, so the one file is the whole report. Links to a run's files are relative to the
page: they work where the page was written, or beside a copy of the run directories placed alike.
"""

import base64
import html
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from matplotlib.figure import Figure

from analysis import compare, sweep
from analysis.plots import DPI, SUMMARY_FORMATS, figures, formatted
from analysis.runs import Run, run_parser, runs_or_exit, summary_table
from harness.atomic import write_text
from harness.run_dir import RunDir
from harness.spec import SpecError

WHOLE_SPECS = 20  # up to this many runs, each run's section holds its whole spec; past it, the page holds it once
CSS = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1280px; margin: 2em auto; padding: 0 1em; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
.table { overflow-x: auto; margin: .5em 0 1em; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; white-space: nowrap; }
thead th { background: #f2f2f2; } tbody tr:nth-child(even) { background: #fafafa; }
img { max-width: 100%; } figure { margin: 1em 0; }
pre { background: #f6f6f6; padding: .6em; white-space: pre-wrap; overflow-wrap: anywhere; }
.state { font-weight: 600; } .muted { color: #666; }
"""


def esc(value: object) -> str:
    return html.escape(str(value))


def table_html(table: pd.DataFrame, formats: dict[str, Callable[[object], str]]) -> str:
    """A table with the same cells as the markdown one (analysis.plots.formatted), escaped."""
    shown = formatted(table, formats)
    head = "".join(f"<th>{esc(c)}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>"
                   for row in shown.itertuples(index=False))
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def figure_html(fig: Figure, alt: str) -> str:
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI)
    data = base64.b64encode(png.getvalue()).decode("ascii")
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}"></figure>'


def link(path: Path, page_dir: Path, text: str) -> str:
    """A link from the page to `path`, relative, so that it survives moving both together."""
    href = Path(os.path.relpath(path.resolve(), page_dir.resolve())).as_posix()
    return f'<a href="{esc(quote(href))}">{esc(text)}</a>'


def field_table(fields: dict[str, object], names: list[str]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(fields[k])}</td></tr>" for k in names)
    return f'<div class="table"><table><tbody>{rows}</tbody></table></div>'


def run_section(run: Run, anchor: str, state: str, differing: list[str], page_dir: Path, whole: bool = True) -> str:
    """One run: state, links to its files (RunDir names them), the fields where it differs from the
    other runs, its samples, and (`whole`) its whole spec folded away."""
    rd = RunDir(run.dir)
    files = [link(p, page_dir, p.name) for p in (rd.config, rd.metrics, rd.errors, rd.jobs, rd.summary)
             if p.exists()]
    files += [link(p, page_dir, f"{rd.checkpoints.name}/{p.name}") for p in rd.checkpoint_dirs()]
    fields = run.fields
    parts = [f'<h3 id="{anchor}">{esc(run.label)}</h3>',
             f'<p>state: <span class="state">{esc(state)}</span> · <span class="muted">{esc(run.dir)}</span></p>',
             f"<p>files: {' · '.join(files) or 'none'}</p>"]
    if differing:
        parts.append("<p>Where its spec differs from the other runs':</p>" + field_table(fields, differing))
    samples = run.curve("sample")
    for row in samples.itertuples(index=False):
        parts.append(f"<p>sample at step {esc(row.step)}:</p><pre>{esc(row.text)}</pre>")
    if samples.empty:
        parts.append('<p class="muted">no text samples</p>')
    if whole:
        parts.append(f"<details><summary>whole spec ({len(fields)} fields)</summary>"
                     f"{field_table(fields, list(fields))}</details>")
    return "\n".join(parts)


def comparison_html(runs: list[Run], by: tuple[str, ...]) -> str:
    """The seed comparison, when some group holds two runs or more (else there is nothing to compare)."""
    groups = compare.group_runs(runs, by)
    if not any(len(g.runs) >= 2 for g in groups):
        return ""
    for g in groups:
        compare.check_schedules(g)
    members = "".join(f"<li>{esc(g.label)}: {esc(', '.join(r.label for r in g.runs))}</li>" for g in groups)
    pairs = compare.pair_table(groups)
    return "\n".join([
        f"<h2>Comparison of runs that differ only in {esc(', '.join(by))}</h2>", f"<ul>{members}</ul>",
        "<p>Final and best val loss per group, with the 95% t interval of the mean:</p>",
        table_html(compare.group_table(groups), compare.FORMATS),
        "<p>Pairs (b &minus; a; Welch's t-test; Hedges' g):</p>",
        table_html(pairs, compare.FORMATS) if not pairs.empty else "<p>fewer than two groups of n &ge; 2</p>",
        figure_html(compare.plot_groups(groups), "val loss per group with 95% bands; final val loss per run"),
    ])


def sweep_html(runs: list[Run], table: pd.DataFrame, by: tuple[str, ...], top: int, rank_by: str) -> str:
    """What the runs vary (their settings) and the best K of them; nothing for fewer runs than K + 1."""
    found = sweep.ordered(sweep.settings(runs, by))
    swept = sorted({k for s in found for k in s.swept})
    sizes = sorted({len(s.runs) for s in found})
    what = f"{len(runs)} runs in {len(found)} setting{'s' * (len(found) > 1)}"
    if swept:
        what += " of " + ", ".join(swept) + f" ({', '.join(s.label for s in found)})"
    each = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]} to {sizes[-1]}"
    what += f"; {each} run{'s' * (sizes[-1] > 1)} each, differing only in {', '.join(by)}"
    parts = ["<h2>Sweep</h2>", f"<p>{esc(what)}</p>"]
    if len(runs) > top:
        chosen = sweep.best(table, top, rank_by)
        parts += [f"<p>The {len(chosen)} best by {esc(rank_by)}:</p>", table_html(chosen, SUMMARY_FORMATS)]
    return "\n".join(parts)


def report(runs: list[Run], page: Path, by: tuple[str, ...] = ("seed",), x: str = "tokens", top: int = 5,
           rank_by: str = "final_val_loss") -> str:
    page_dir = page.parent
    table = summary_table(runs)
    anchors = [f"run-{i}" for i in range(len(runs))]
    differing = sweep.differing_fields([r.fields for r in runs], set(sweep.IGNORED))
    shown = [figure_html(fig, stem) for stem, fig in figures(runs, x, by, top, rank_by).items() if fig is not None]
    contents = "".join(f'<li><a href="#{a}">{esc(r.label)}</a></li>' for a, r in zip(anchors, runs, strict=True))
    whole = len(runs) <= WHOLE_SPECS
    sections = [run_section(r, a, state, differing, page_dir, whole)
                for r, a, state in zip(runs, anchors, table["state"], strict=True)]
    if not whole:  # the same hundred fields in every run: once, for all
        shared = [k for k in runs[0].fields if k not in differing]
        sections.insert(0, f"<details><summary>the spec all {len(runs)} runs share ({len(shared)} fields; each "
                           f"run's own is its config.json)</summary>{field_table(runs[0].fields, shared)}</details>")
    return "\n".join([
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>harness report: {len(runs)} runs</title><style>{CSS}</style></head><body>",
        f"<h1>harness report: {len(runs)} runs</h1>",
        f'<p class="muted">written {esc(time.strftime("%Y-%m-%d %H:%M:%S %Z"))} by python -m analysis.report</p>',
        sweep_html(runs, table, by, top, rank_by) if len(runs) > 1 else "",
        "<h2>Summary</h2>", table_html(table, SUMMARY_FORMATS),
        comparison_html(runs, by),
        "<h2>Figures</h2>", *shown,
        "<h2>Runs</h2>", f"<ul>{contents}</ul>", *sections,
        "</body></html>\n",
    ])


def main(argv: list[str] | None = None) -> Path:
    p = run_parser("python -m analysis.report", __doc__)
    p.add_argument("--out", type=Path, default=Path("log/report.html"), help="the page (default log/report.html)")
    sweep.add_arguments(p)
    args = p.parse_args(argv)

    runs = runs_or_exit(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        page = report(runs, args.out, tuple(args.by), top=args.top, rank_by=args.rank_by)
    except SpecError as e:
        sys.exit(f"error: {e}")
    write_text(args.out, page)
    print(f"wrote {args.out} ({len(page.encode()) / 1e6:.1f} MB, {len(runs)} runs)")
    return args.out


if __name__ == "__main__":
    main()
