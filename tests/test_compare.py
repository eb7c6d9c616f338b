"""analysis.compare on a real seed sweep (3 seeds x 2 learning rates of the tiny GPT, tests/helpers.py):
grouping, and every statistic checked against numbers computed here from the logs with numpy and
scipy's t distribution, or against numbers known by hand."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import compare
from analysis.runs import load_runs
from harness import records
from harness.run_dir import RunDir
from harness.spec import SpecError
from tests.helpers import PNG, SWEEP_BATCH, SWEEP_LRS, SWEEP_SEEDS, SWEEP_STEPS, harness

# t(0.975) with 2 degrees of freedom (3 seeds), from the closed form of the t quantile at 2 df,
# (2p - 1) / sqrt(2p(1 - p)): 4.3027 (printed tables give 4.303).
T_975_2DF = 0.95 / math.sqrt(2 * 0.975 * 0.025)
VAL_TOKENS = [step * SWEEP_BATCH for step in range(0, SWEEP_STEPS + 1, 4)]  # val every 4 steps


def val_losses(run_dir: Path) -> dict[int, float]:
    """tokens -> val loss, from the metrics file itself."""
    return {r["tokens"]: r["loss"] for r in records.read(RunDir(run_dir)) if r["kind"] == "val"}


def logged(sweep: dict, lr: str, metric: str) -> np.ndarray:
    """The final or best val loss of each seed at `lr`, from the logs."""
    pick = {"final_val_loss": lambda v: v[max(v)], "best_val_loss": lambda v: min(v.values())}[metric]
    return np.array([pick(val_losses(sweep[(lr, seed)])) for seed in SWEEP_SEEDS])


def root(sweep: dict) -> Path:
    return next(iter(sweep.values())).parent


@pytest.fixture(scope="module")
def groups(seed_sweep: dict) -> dict[str, compare.Group]:
    """The sweep's groups by label."""
    return {g.label: g for g in compare.group_runs(load_runs([root(seed_sweep)]))}


def lr_label(lr: str) -> str:
    return f"optim.lr={float(lr)}"


# ----------------------------------------------------------------------------- known numbers (no training)


def test_statistics_on_known_numbers() -> None:
    a, b = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    s = compare.spread(a)
    # mean 2, s = 1, interval 2 +- 4.303 / sqrt(3).
    assert (s["n"], s["mean"], s["std"], s["min"], s["max"]) == (3, 2.0, 1.0, 1.0, 3.0)
    assert stats.t.ppf(0.975, 2) == pytest.approx(T_975_2DF, rel=1e-12)
    half = T_975_2DF / math.sqrt(3)
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((2 - half, 2 + half))
    # d = 3 / pooled s (1) = 3; Hedges' correction 1 - 3 / (4 * 6 - 9) = 0.8.
    assert compare.hedges_g(a, b) == pytest.approx(2.4)
    assert compare.hedges_g(b, a) == pytest.approx(-2.4)
    assert math.isnan(compare.hedges_g(np.ones(3), np.ones(3)))
    one = compare.spread(np.array([5.0]))
    assert one["mean"] == 5.0 and all(math.isnan(one[k]) for k in ("std", "ci95_low", "ci95_high"))


# ----------------------------------------------------------------------------- the sweep


@pytest.mark.slow
def test_groups_ignore_seed_and_separate_lr(seed_sweep: dict, groups: dict) -> None:
    assert sorted(groups) == sorted(lr_label(lr) for lr in SWEEP_LRS)
    for lr in SWEEP_LRS:
        g = groups[lr_label(lr)]
        assert sorted(r.spec.seed for r in g.runs) == list(SWEEP_SEEDS)
        assert {r.spec.optim.lr for r in g.runs} == {float(lr)}
        assert sorted(r.dir for r in g.runs) == sorted(seed_sweep[(lr, s)] for s in SWEEP_SEEDS)
        assert len(set(g.values("final_val_loss"))) == len(SWEEP_SEEDS), "the seeds should not all end alike"
    # Also leaving out the learning rate: one group, named by what its runs' names share.
    (everything,) = compare.group_runs(load_runs([root(seed_sweep)]), by=("seed", "optim.lr"))
    assert everything.label == "tiny-lr" and len(everything.runs) == len(seed_sweep)
    with pytest.raises(SpecError, match=r"--by optim\.lrr: no such field in .*config\.json"):
        compare.group_runs(load_runs([root(seed_sweep)]), by=("optim.lrr",))


@pytest.mark.slow
def test_group_statistics_match_the_logs(seed_sweep: dict, groups: dict) -> None:
    table = compare.group_table(list(groups.values())).set_index(["group", "metric"])
    assert len(table) == len(SWEEP_LRS) * len(compare.METRICS)
    for lr in SWEEP_LRS:
        for metric in compare.METRICS:
            values = logged(seed_sweep, lr, metric)
            row = table.loc[(lr_label(lr), metric)]
            mean, std = values.mean(), values.std(ddof=1)
            half = T_975_2DF * std / math.sqrt(len(values))
            assert row["n"] == 3
            assert row["mean"] == pytest.approx(mean, rel=1e-12)
            assert row["std"] == pytest.approx(std, rel=1e-9)
            assert (row["min"], row["max"]) == (values.min(), values.max())
            assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((mean - half, mean + half), rel=1e-9)


@pytest.mark.slow
def test_pairs_are_welch_tests_and_hedges_g(seed_sweep: dict, groups: dict) -> None:
    pairs = compare.pair_table(list(groups.values())).set_index("metric")
    assert sorted(pairs.index) == sorted(compare.METRICS)
    for metric in compare.METRICS:
        row = pairs.loc[metric]
        lr_a, lr_b = (next(lr for lr in SWEEP_LRS if lr_label(lr) == row[side]) for side in ("a", "b"))
        a, b = logged(seed_sweep, lr_a, metric), logged(seed_sweep, lr_b, metric)
        # Welch by hand: t = (mb - ma) / sqrt(va/na + vb/nb), Welch-Satterthwaite df, two-sided p.
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        t = (b.mean() - a.mean()) / math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
        pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)  # equal n: the mean of the variances
        assert (row["n_a"], row["n_b"]) == (3, 3)
        assert row["mean_b_minus_a"] == pytest.approx(b.mean() - a.mean(), rel=1e-12)
        assert row["welch_t"] == pytest.approx(t, rel=1e-9)
        assert row["welch_df"] == pytest.approx(df, rel=1e-9)
        assert row["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
        assert row["hedges_g"] == pytest.approx((b.mean() - a.mean()) / pooled * (1 - 3 / 15), rel=1e-9)


@pytest.mark.slow
def test_mean_curve_at_matched_tokens(seed_sweep: dict, groups: dict, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    lr = SWEEP_LRS[0]
    curve = compare.mean_curve(groups[lr_label(lr)])
    assert curve["tokens"].tolist() == VAL_TOKENS
    losses = np.array([[val_losses(seed_sweep[(lr, s)])[t] for s in SWEEP_SEEDS] for t in VAL_TOKENS])
    np.testing.assert_allclose(curve["mean"], losses.mean(axis=1), rtol=1e-12)
    half = T_975_2DF * losses.std(axis=1, ddof=1) / math.sqrt(3)
    np.testing.assert_allclose(curve["ci95_high"] - curve["mean"], half, rtol=1e-9)
    np.testing.assert_allclose(curve["mean"] - curve["ci95_low"], half, rtol=1e-9)

    # A fourth seed that stopped after step 4 (as if still running): the curve keeps the tokens all
    # four evaluated, and the group is flagged.
    short = tmp_path / "tiny-short-seed9"
    short.mkdir()
    spec = json.loads(RunDir(seed_sweep[(lr, 1)]).config.read_text()) | {"seed": 9, "name": short.name}
    RunDir(short).config.write_text(json.dumps(spec))
    lines = RunDir(seed_sweep[(lr, 1)]).metrics.read_text().splitlines(keepends=True)
    RunDir(short).metrics.write_text("".join(x for x in lines if json.loads(x).get("step", 0) <= 4))
    (group,) = compare.group_runs(load_runs([seed_sweep[(lr, s)] for s in SWEEP_SEEDS] + [short]))
    assert len(group.runs) == 4 and compare.mean_curve(group)["tokens"].tolist() == VAL_TOKENS[:2]
    compare.check_schedules(group)
    assert "different token counts" in capsys.readouterr().err


@pytest.mark.slow
def test_a_group_of_one_has_no_interval_and_no_pair(seed_sweep: dict) -> None:
    a, b = SWEEP_LRS
    runs = load_runs([seed_sweep[(a, s)] for s in SWEEP_SEEDS] + [seed_sweep[(b, 1)]])
    groups = compare.group_runs(runs)
    table = compare.group_table(groups).set_index(["group", "metric"])
    single = table.loc[(lr_label(b), "final_val_loss")]
    assert single["n"] == 1 and single["mean"] == logged(seed_sweep, b, "final_val_loss")[0]
    assert np.isnan(single["ci95_low"]) and np.isnan(single["std"])
    assert compare.pair_table(groups).empty
    compare.plot_groups(groups)  # draws the single run without a band


@pytest.mark.slow
def test_figure_draws_each_group(groups: dict) -> None:
    fig = compare.plot_groups(list(groups.values()))
    curves, finals = fig.axes[:2]
    for g in groups.values():
        mean = next(line for line in curves.get_lines() if line.get_label() == f"{g.label} (n=3)")
        expected = compare.mean_curve(g).query("tokens > 0")  # a log axis cannot show the evaluation at 0
        np.testing.assert_allclose(mean.get_ydata(), expected["mean"])
    assert len(curves.get_lines()) == 2 * (3 + 1)  # per group: its runs faint, and the mean
    dots = np.concatenate([c.get_offsets()[:, 1] for c in finals.collections if len(c.get_offsets()) == 3])
    np.testing.assert_allclose(sorted(dots), sorted(np.concatenate([g.values("final_val_loss")
                                                                    for g in groups.values()])))


@pytest.mark.slow
def test_command_line(seed_sweep: dict, tmp_path: Path) -> None:
    out = tmp_path / "compare"
    done = harness("analysis.compare", str(root(seed_sweep)), "--out", str(out))
    assert (out / "compare.png").read_bytes().startswith(PNG)
    table = pd.read_csv(out / "compare_groups.csv")
    pairs = pd.read_csv(out / "compare_pairs.csv")
    assert len(table) == 4 and len(pairs) == 2
    md = (out / "compare.md").read_text()
    assert md in done.stdout
    for lr in SWEEP_LRS:
        final = logged(seed_sweep, lr, "final_val_loss")
        assert f"| {lr_label(lr)} | final_val_loss | 3 | {final.mean():.4f} | {final.std(ddof=1):.4f} |" in md
        assert f"tiny-lr{lr}-seed1, tiny-lr{lr}-seed2, tiny-lr{lr}-seed3" in md

    one = tmp_path / "one"
    harness("analysis.compare", str(root(seed_sweep)), "--runs", f"tiny-lr{SWEEP_LRS[0]}-*", "--out", str(one))
    assert pd.read_csv(one / "compare_pairs.csv").empty
    assert "no pairs" in (one / "compare.md").read_text()
    assert "tiny-lr3e-3-seed" in (one / "compare.md").read_text()  # the only group, named by its runs

    bad = harness("analysis.compare", str(root(seed_sweep)), "--by", "model.n_layers", check=False)
    assert bad.returncode != 0 and "--by model.n_layers: no such field" in bad.stderr


def test_missing_runs_exit_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no runs under"):
        compare.main([str(tmp_path), "--out", str(tmp_path / "out")])
