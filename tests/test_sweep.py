"""A sweep of many runs, made from a real run's rows (harness.tools.sweep: 3 learning rates x 8 seeds, 1,500
train rows each, some preempted and resumed, failed or still running): harness.status sums it up, sorts
and filters it asking Slurm once, and its figures and report stay readable (a legend entry per value of
the swept field, not per run) and small. The full-size timings (200 runs x 5,000 rows) are a benchmark:
`python -m harness.bench sweep`."""

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from analysis import plots, report
from analysis.runs import load_runs
from analysis.sweep import colors, settings
from harness.cluster import status
from harness.run_dir import find_runs
from harness.tools.sweep import lives, make_sweep

LRS, SEEDS, STEPS, VAL_EVERY, EVERY = (1e-3, 3e-3, 1e-2), 8, 1500, 100, 12
LABELS = [f"optim.lr={lr} (n={SEEDS})" for lr in LRS]


@pytest.fixture(scope="module")
def sweep(seed_sweep: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep, made from the rows of a real run of the tiny GPT (tests/conftest.py: seed_sweep)."""
    out = tmp_path_factory.mktemp("sweep")
    make_sweep(seed_sweep[("3e-3", 1)], out, list(LRS), SEEDS, STEPS, VAL_EVERY, every=EVERY)
    return out


@pytest.fixture(scope="module")
def runs(sweep: Path) -> list:
    return load_runs([sweep])


def fates() -> dict[str, list[str]]:
    """Run names by how each ends (harness.tools.sweep.lives): failed, running (no stop yet) or finished."""
    out: dict[str, list[str]] = {"failed": [], "running": [], "finished": []}
    for index in range(len(LRS) * SEEDS):
        stop = lives(index, STEPS, EVERY)[-1].stop
        out["running" if stop is None else stop].append(f"sweep-lr{LRS[index // SEEDS]:g}-seed{index % SEEDS + 1}")
    return out


def shown(capsys: pytest.CaptureFixture, *args: str) -> list[dict]:
    status.main([*args, "--json"])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


# ----------------------------------------------------------------------------- status


def test_status_sums_up_sorts_and_filters_a_sweep_asking_slurm_once(sweep: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # squeue and sacct as the first ones on PATH: each notes how it was called, then hands over to the real
    # one where there is one (whose answer here, with no cluster, is that it knows none of these jobs).
    calls = tmp_path / "calls"
    for name in ("squeue", "sacct"):
        shim = tmp_path / "bin" / name
        shim.parent.mkdir(exist_ok=True)
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n[ -x /usr/bin/{name} ] && exec /usr/bin/{name} "$@"\n'
                        "exit 1\n")
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    every = shown(capsys, str(sweep))
    jobs = {str(s["job"]) for s in every}
    asked = calls.read_text().splitlines()
    # One squeue for every job; no cluster answers here, so sacct is not asked either (on a cluster it is, once).
    assert len(every) == len(jobs) == len(LRS) * SEEDS and [line.split()[0] for line in asked] == ["squeue"]
    for line in asked:  # each with every job, in one -j list
        assert set(line.split(" -j ")[1].split()[0].split(",")) == jobs

    expected = fates()
    for phase, names in expected.items():
        assert sorted(s["name"] for s in every if status.phase(s) == phase) == sorted(names), phase
    best = min(every, key=lambda s: s["val_loss"])
    status.main([str(sweep), "--top", "2"])
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith(
        f"{len(every)} runs: {len(expected['running'])} running, {len(expected['finished'])} finished, "
        f"{len(expected['failed'])} failed | best {best['name']} (val {best['val_loss']:.4f}) | ")
    assert "showing 2" in text.splitlines()[0] and len(text.splitlines()) == 2 + 1 + 2  # the line, a gap, the table

    by_loss = sorted(every, key=lambda s: s["val_loss"])
    assert [s["name"] for s in shown(capsys, str(sweep), "--top", "3")] == [s["name"] for s in by_loss[:3]]
    assert [s["step"] for s in shown(capsys, str(sweep), "--sort", "step")] == sorted(
        (s["step"] for s in every), reverse=True)
    assert sorted(s["name"] for s in shown(capsys, str(sweep), "--failed")) == sorted(expected["failed"])
    assert sorted(s["name"] for s in shown(capsys, str(sweep), "--running")) == sorted(expected["running"])


# ----------------------------------------------------------------------------- figures and the report


def test_the_loss_figure_has_a_legend_entry_per_value_coloured_in_order(runs: list) -> None:
    ax = plots.plot_loss(runs, "tokens").axes[0]
    legend = ax.get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == [*LABELS, "train loss (EMA)", "val loss", "lowest to highest seed"]
    # Dark to light along the learning rate (viridis): the colour reads as the value.
    shades = [np.dot(to_rgba(h.get_color())[:3], [0.299, 0.587, 0.114]) for h in legend.legend_handles[:len(LRS)]]
    assert shades == sorted(shades) and len(set(shades)) == len(LRS)
    # 36,000 train rows and 360 val rows drawn in a few hundred points per setting.
    assert sum(len(line.get_xdata()) for line in ax.get_lines()) < 3000
    # A setting's val line is the mean of its seeds', at each step they were evaluated.
    found = {s.label: s for s in settings(runs)}
    color = colors(list(found.values()))
    for label, s in found.items():
        val = next(line for line in ax.get_lines() if line.get_linestyle() == "--" and
                   to_rgba(line.get_color()) == to_rgba(color[label]))
        at = {t: np.mean([r.curve("val").set_index("tokens")["loss"].get(t, np.nan) for r in s.runs
                          if t in r.curve("val")["tokens"].values]) for t in val.get_xdata()}
        np.testing.assert_allclose(val.get_ydata(), [at[t] for t in val.get_xdata()], rtol=1e-12)


def test_every_figure_of_the_sweep_stays_readable(runs: list, tmp_path: Path) -> None:
    figures = plots.figures(runs, "tokens")
    assert [t.get_text() for t in figures["throughput"].axes[0].get_legend().get_texts()] == LABELS
    assert [t.get_text() for t in figures["lr"].axes[0].get_legend().get_texts()] == LABELS
    assert figures["evals"] is None  # no eval tasks in these runs
    # More runs than a legend takes: the ledger sums each setting's runs in a bar.
    bars = [t.get_text() for t in figures["ledger"].axes[0].get_yticklabels()]
    assert sorted(bars) == sorted(f"optim.lr={lr} ({SEEDS} runs)" for lr in LRS)
    # The best five by final val loss, over the range of all the runs.
    best = sorted(runs, key=lambda r: r.summary.val_loss)[:5]
    texts = [t.get_text() for t in figures["best"].axes[0].get_legend().get_texts()]
    assert texts == [f"{i + 1}. {r.label} (final_val_loss {r.summary.val_loss:.4f})" for i, r in enumerate(best)] + [
        f"all {len(runs)} runs: lowest to highest"]
    for stem, fig in figures.items():
        if fig is not None:
            (path,) = plots.save(fig, tmp_path, stem, svg=False)
            assert 10_000 < path.stat().st_size < 200_000, (stem, path.stat().st_size)
    # With no setting of more than one run (seeds not grouped), too many for a legend: run by run, thin
    # lines coloured along the learning rate, with a colour bar.
    fig = plots.plot_loss(runs, "tokens", by=())
    assert len(fig.axes) == 2 and "optim.lr" in fig.axes[1].get_ylabel()
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][:1] == ["train loss (EMA)"]


def test_the_report_of_a_sweep_is_one_small_page(sweep: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    report.main([str(sweep), "--out", str(page), "--top", "4"])
    text = page.read_text()
    assert page.stat().st_size < 2e6
    assert f"{len(LRS) * SEEDS} runs in {len(LRS)} settings of optim.lr" in text
    assert "The 4 best by final_val_loss" in text
    assert text.count("<img") == 6  # loss, throughput, lr, ledger, best, and the comparison of the settings
    assert text.count('<h3 id="run-') == len(find_runs([str(sweep)]))
