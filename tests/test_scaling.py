"""analysis.scaling on points drawn from known laws: approach 3 recovers Chinchilla's published parameters within
its bootstrap intervals, approach 2 and the fitted frontier recover the compute-optimal exponent beta/(alpha+beta),
and the command reads a CSV, predicts, holds the largest size out, and writes its JSON and figure."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import scaling

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022, approach 3


def law(n: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
    return TRUE["E"] + TRUE["A"] / np.asarray(n) ** TRUE["alpha"] + TRUE["B"] / np.asarray(d) ** TRUE["beta"]


@pytest.fixture(scope="module")
def ladder_points() -> pd.DataFrame:
    """A ladder by token multiples: 5 sizes from 1M to 100M x 5 budgets of 5-80 tokens per parameter, each loss
    off the law by a lognormal 0.3% (seeded)."""
    rng = np.random.default_rng(1)
    rows = [{"run": f"{n:g}x{m}", "params": n, "tokens": m * n, "flops": 6 * n * m * n,
             "loss": float(law(n, m * n) * np.exp(rng.normal(0, 0.003)))}
            for n in (1e6, 3e6, 1e7, 3e7, 1e8) for m in (5, 10, 20, 40, 80)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def fitted(ladder_points: pd.DataFrame) -> scaling.Fit:
    return scaling.fit(ladder_points, bootstrap=40, starts=8)


def test_approach_3_recovers_the_parameters_within_its_intervals(fitted: scaling.Fit) -> None:
    values, intervals = fitted.values, fitted.intervals
    for name, true in TRUE.items():
        low, high = intervals[name]
        assert low <= true <= high, (name, true, low, high)
        assert low <= values[name] <= high
    assert abs(values["alpha"] - TRUE["alpha"]) < 0.02 and abs(values["beta"] - TRUE["beta"]) < 0.02
    assert intervals["alpha"][1] - intervals["alpha"][0] < 0.1  # and they are intervals, not the whole range
    # beyond the points: 10x the largest size at 20 tokens a parameter
    p = fitted.predict(1e9, 2e10)
    assert p["low"] <= float(law(1e9, 2e10)) <= p["high"] and abs(p["loss"] / float(law(1e9, 2e10)) - 1) < 0.01


def test_the_fitted_frontier_has_chinchilla_s_exponent(fitted: scaling.Fit, ladder_points: pd.DataFrame) -> None:
    """With C = 6ND the optimal N grows as C^(beta / (alpha + beta)) of the fitted alpha and beta."""
    fpt = scaling.flops_per_token_rule(ladder_points)
    assert fpt(2e6) == pytest.approx(1.2e7)  # exactly 6N when C = 6ND
    c = np.geomspace(1e17, 1e21, 9)
    n_opt, d_opt, _ = scaling.frontier(fitted, fpt, c, (1e6, 1e8))
    v = fitted.values
    assert scaling.power_law(c, n_opt)["exponent"] == pytest.approx(v["beta"] / (v["alpha"] + v["beta"]), abs=2e-3)
    assert np.allclose(6 * n_opt * d_opt, c)


def test_approach_2_recovers_the_allocation_from_iso_flop_profiles() -> None:
    """Points on 4 iso-FLOP lines, 7 sizes around the optimum each (no noise): the parabolas' vertices give
    N_opt ~ C^(beta/(alpha+beta)) and D_opt ~ C^(alpha/(alpha+beta))."""
    a, b = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), TRUE["alpha"] / (TRUE["alpha"] + TRUE["beta"])
    g = (TRUE["alpha"] * TRUE["A"] / (TRUE["beta"] * TRUE["B"])) ** (1 / (TRUE["alpha"] + TRUE["beta"]))
    rows = []
    for c in (1e18, 1e19, 1e20, 1e21):
        for f in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8):
            n = g * (c / 6) ** a * f
            rows.append({"run": "", "params": n, "tokens": c / (6 * n), "flops": c, "loss": float(law(n, c / (6 * n)))})
    points = pd.DataFrame(rows)
    result = scaling.isoflop_profiles(points, scaling.flops_per_token_rule(points))
    assert len(result.profiles) == 4 and all(p.n_opt is not None for p in result.profiles)
    assert result.n_law["exponent"] == pytest.approx(a, abs=1e-6)
    assert result.d_law["exponent"] == pytest.approx(b, abs=1e-6)
    # the parabola in log N is an approximation of the true profile: its vertex within 5% of the true optimum
    for p in result.profiles:
        assert p.n_opt == pytest.approx(g * (p.compute / 6) ** a, rel=0.05)


def test_the_command_fits_a_csv_predicts_and_holds_out(ladder_points: pd.DataFrame, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    csv = tmp_path / "points.csv"
    ladder_points.drop(columns=["flops", "run"]).to_csv(csv, index=False)  # no flops column: C = 6ND
    scaling.main(["--points", str(csv), "--predict", "1e9,2e10", "--holdout", "--bootstrap", "10", "--starts", "4",
                  "--json", str(tmp_path / "fit.json"), "--out", str(tmp_path / "fig.png")])
    text = capsys.readouterr().out
    assert "N: parameters as the CSV counts them; C: 6ND (no flops column)" in text
    assert "predicted loss at N=1,000,000,000, D=20,000,000,000:" in text
    assert "Held out: the fit without the largest size (N=100,000,000)" in text
    out = json.loads((tmp_path / "fit.json").read_text())
    assert set(out["fit"]) >= {"E", "A", "B", "alpha", "beta", "intervals", "huber_delta", "bootstrap"}
    assert out["fit"]["huber_delta"] == 1e-3 and set(out["fit"]["intervals"]) == set(TRUE)
    assert out["params"] == "csv" and out["compute"] == "6ND (no flops column)" and len(out["points"]) == 25
    (pred,) = out["predict"]
    assert pred["low"] <= pred["loss"] <= pred["high"]
    held = out["holdout"]["predictions"]
    assert [h["params"] for h in held] == [1e8] * 5 and out["holdout"]["fit"]["points"] == 20
    assert all(abs(h["error_pct"]) < 1.5 for h in held)  # the 0.3% noise, extrapolated one size up
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"


def test_a_bad_csv_is_named(tmp_path: Path) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text("params,loss\n1,2\n")
    with pytest.raises(SystemExit, match=r"p.csv: no column tokens \(columns: params, loss\)"):
        scaling.main(["--points", str(csv)])
    csv.write_text("params,tokens,loss\n1e6,2e7,3.1\n1e6,-1,3\n")
    with pytest.raises(SystemExit, match="p.csv: row 3: params, tokens and loss must be positive"):
        scaling.main(["--points", str(csv)])
