"""Scaling laws from a ladder of runs (or any table of points): Chinchilla's approaches 3 and 2, predictions
with intervals, and a held-out check.

    python -m analysis.scaling log/ladder_shakespeare                 # the finished, cooled-down runs under it
    python -m analysis.scaling log/ladder_shakespeare --holdout       # fit all sizes but the largest; predict it
    python -m analysis.scaling --points points.csv --predict 1e6,2e7 --json fit.json --out scaling.png

A point is a run's final val loss L, its parameters N, its tokens D and its compute C. N counts the
non-embedding parameters (the token and position tables left out, Kaplan et al. 2020), or all of them with
`--params total`; every output says which. C is the measured FLOPs per token x D (records.summarize): at a
CPU ladder's sizes the output layer is most of the compute, so not 6ND. Runs that did not finish, have no
val loss, or whose rate never decays (a trunk: constant, or WSD without a decay) are left out, and said so.
A CSV has columns params, tokens, loss and optionally flops (without it C = 6ND, said so).

Approach 3 (Hoffmann et al. 2022, as Besiroglu et al. 2024 replicate it): L(N, D) = E + A/N^alpha + B/D^beta,
as log L = LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b, E = e^e, fitted by the Huber loss
(delta 1e-3) of the residuals in log L, summed over the points and minimized by L-BFGS-B (analytic gradient)
from the best starts of Chinchilla's grid of 5,400 (alpha, beta in 0..2, e in -1..1.5, a, b in 0..25);
95% intervals are the percentiles of refits to bootstrap resamples of the points. The compute-optimal
frontier minimizes the fitted L over N at each C = FLOPs per token (N) x D.
Approach 2: for each compute budget the loss-optimal size, the vertex of a parabola in log N through the
sizes' losses at that budget (each size's loss interpolated in log C between its own points; three sizes
at least, the vertex between them), then N_opt(C) and D_opt(C) as power laws.
"""

import argparse
import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from scipy.optimize import minimize
from scipy.special import huber
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from analysis.plots import save
from analysis.runs import load_runs
from harness.atomic import write_text

DELTA = 1e-3  # Huber's delta on residuals of log L (Hoffmann et al.)
NAMES = ("E", "A", "B", "alpha", "beta")
COUNTS = {"non_embedding": "non-embedding parameters", "total": "all parameters (embeddings included)",
          "csv": "parameters as the CSV counts them"}
# L-BFGS-B's iterations per start: a well-posed fit converges in 50-300 here; one the points cannot determine
# wanders along a flat valley until this limit.
MAX_ITER = 500
MIN_SPAN = 2.0  # approach 2 fits its power laws only to vertices spanning this factor of compute or more
BOUNDS = [(-20.0, 60.0), (-20.0, 60.0), (-10.0, 5.0), (1e-3, 5.0), (1e-3, 5.0)]  # a, b, e, alpha, beta


# ----------------------------------------------------------------------------- points


def points_from_runs(paths: list[str], pattern: str | None, count: str) -> tuple[pd.DataFrame, list[str]]:
    """One point per finished run whose schedule decays and that has a val loss; and why each other run is
    left out."""
    rows, skipped = [], []
    for run in load_runs(paths, pattern):
        s, sched = run.summary, run.spec.schedule
        constant = sched.decay == "constant" or (sched.decay == "wsd" and sched.decay_steps == 0)
        why = "its rate never decays (a trunk)" if constant else "not finished" if s.state != "finished" else \
            "no val loss" if s.val_loss is None else None
        if why:
            skipped.append(f"{run.label}: {why}")
            continue
        n = s.parameters_non_embedding if count == "non_embedding" else s.parameters
        rows.append({"run": run.label, "params": n, "tokens": s.tokens, "flops": s.flops, "loss": s.val_loss})
    return pd.DataFrame(rows, columns=["run", "params", "tokens", "flops", "loss"]), skipped


def points_from_csv(path: Path) -> tuple[pd.DataFrame, str]:
    """The points of a CSV (columns params, tokens, loss[, flops]); and where C comes from."""
    table = pd.read_csv(path)
    if missing := [c for c in ("params", "tokens", "loss") if c not in table]:
        raise ValueError(f"{path}: no column {', '.join(missing)} (columns: {', '.join(table.columns)})")
    bad = table[~((table[["params", "tokens", "loss"]] > 0).all(axis=1))]
    if not bad.empty:
        raise ValueError(f"{path}: row {bad.index[0] + 2}: params, tokens and loss must be positive numbers")
    compute = "flops column" if "flops" in table else "6ND (no flops column)"
    if "flops" not in table:
        table["flops"] = 6.0 * table["params"] * table["tokens"]
    if "run" not in table:
        table["run"] = [f"row {i + 2}" for i in range(len(table))]
    return table[["run", "params", "tokens", "flops", "loss"]].astype({"params": float, "tokens": float}), compute


# ----------------------------------------------------------------------------- approach 3


def objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
              delta: float = DELTA) -> tuple[float, np.ndarray]:
    """The summed Huber loss of the residuals in log L, over delta (so that its scale suits L-BFGS-B's
    tolerances), and its gradient in (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    t1, t2 = a - alpha * log_n, b - beta * log_d
    lse = np.logaddexp(np.logaddexp(t1, t2), e)
    r = lse - log_l
    psi = np.clip(r, -delta, delta) / delta  # Huber's derivative
    w1, w2, w3 = np.exp(t1 - lse), np.exp(t2 - lse), np.exp(e - lse)  # d lse / d (each term)
    grad = np.array([psi @ w1, psi @ w2, psi @ w3, -psi @ (w1 * log_n), -psi @ (w2 * log_d)])
    return float(huber(delta, r).sum() / delta), grad


def chinchilla_grid() -> np.ndarray:
    """Chinchilla's starts, as (a, b, e, alpha, beta) rows: 6 x 6 x 6 x 5 x 5 = 5,400."""
    rows = itertools.product(np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.arange(-1, 2, 0.5),
                             np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))
    return np.clip(np.array(list(rows)), [lo for lo, _ in BOUNDS], [hi for _, hi in BOUNDS])


def grid_values(grid: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray) -> np.ndarray:
    """The objective at every start at once (no gradient), to choose which starts to refine."""
    a, b, e, alpha, beta = (grid[:, i:i + 1] for i in range(5))
    lse = np.logaddexp(np.logaddexp(a - alpha * log_n, b - beta * log_d), e)
    return huber(DELTA, lse - log_l).sum(axis=1) / DELTA


def minimize_from(starts: np.ndarray, data: tuple[np.ndarray, ...]) -> tuple[np.ndarray, float]:
    """The best L-BFGS-B result over `starts`. It works with log N and log D centred on their means (a and alpha,
    b and beta are then nearly independent: far fewer iterations) and translates back."""
    log_n, log_d, log_l = data
    mean_n, mean_d = log_n.mean(), log_d.mean()
    shift = np.array([[1, 0, 0, mean_n, 0], [0, 1, 0, 0, mean_d], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]])
    bounds = [(-100.0, 100.0)] * 2 + BOUNDS[2:]  # centred a, b: wide, but finite (exp stays a number)
    best, best_f = starts[0], np.inf
    for start in starts:
        res = minimize(objective, np.linalg.solve(shift, start), args=(log_n - mean_n, log_d - mean_d, log_l),
                       jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": MAX_ITER, "ftol": 1e-12,
                                                                            "gtol": 1e-10})
        if res.fun < best_f:
            best, best_f = shift @ res.x, float(res.fun)
    return best, best_f


@dataclass
class Fit:
    """L(N, D) = E + A/N^alpha + B/D^beta, its bootstrap refits and what it was fitted to."""

    theta: np.ndarray  # (a, b, e, alpha, beta)
    boot: np.ndarray  # one row of theta per bootstrap resample
    objective: float
    points: int
    sizes: int

    @staticmethod
    def natural(theta: np.ndarray) -> np.ndarray:
        """(E, A, B, alpha, beta) from (a, b, e, alpha, beta); rows too."""
        t = np.atleast_2d(theta)
        return np.column_stack([np.exp(t[:, 2]), np.exp(t[:, 0]), np.exp(t[:, 1]), t[:, 3], t[:, 4]]).squeeze()

    @property
    def values(self) -> dict[str, float]:
        return dict(zip(NAMES, map(float, self.natural(self.theta)), strict=True))

    @property
    def intervals(self) -> dict[str, list[float]]:
        """95% percentile intervals of each parameter over the bootstrap refits."""
        boot = np.atleast_2d(self.natural(self.boot))
        return {k: [float(np.percentile(boot[:, i], 2.5)), float(np.percentile(boot[:, i], 97.5))]
                for i, k in enumerate(NAMES)}

    def loss(self, n: np.ndarray | float, d: np.ndarray | float, theta: np.ndarray | None = None) -> np.ndarray:
        a, b, e, alpha, beta = self.theta if theta is None else theta
        return np.exp(e) + np.exp(a) / np.asarray(n, float) ** alpha + np.exp(b) / np.asarray(d, float) ** beta

    def predict(self, n: float, d: float) -> dict[str, float]:
        """The predicted loss at N, D, with the 2.5 and 97.5 percentiles over the bootstrap refits."""
        boot = [float(self.loss(n, d, t)) for t in self.boot]
        return {"params": n, "tokens": d, "loss": float(self.loss(n, d)),
                "low": float(np.percentile(boot, 2.5)), "high": float(np.percentile(boot, 97.5))}

    def to_dict(self) -> dict:
        return {**self.values, "intervals": self.intervals, "huber_delta": DELTA, "objective": self.objective,
                "bootstrap": len(self.boot), "points": self.points, "sizes": self.sizes}


def fit(points: pd.DataFrame, bootstrap: int = 200, starts: int = 32, seed: int = 0, show: bool = False) -> Fit:
    """Approach 3 on `points` (columns params, tokens, loss). L-BFGS-B runs from the `starts` grid points with
    the lowest objective (0: from all 5,400); each bootstrap refit from the full fit's optimum and from its own
    best grid point."""
    data = tuple(np.log(points[c].to_numpy(float)) for c in ("params", "tokens", "loss"))
    grid = chinchilla_grid()
    order = np.argsort(grid_values(grid, *data))
    # L-BFGS-B's own steps call BLAS on 5-vectors: BLAS threads cost far more than they save there.
    with threadpool_limits(limits=1, user_api="blas"):
        theta, value = minimize_from(grid[order[:starts] if starts else order], data)
        rng = np.random.default_rng(seed)
        boot = []
        for _ in tqdm(range(bootstrap), desc=f"bootstrap refits ({len(points)} points)", disable=not show,
                      leave=False):
            pick = rng.integers(0, len(points), len(points))
            sample = tuple(x[pick] for x in data)
            nearest = grid[np.argsort(grid_values(grid, *sample))[:1]]
            boot.append(minimize_from(np.vstack([theta, nearest]), sample)[0])
    return Fit(theta, np.array(boot).reshape(-1, 5), value, len(points), points["params"].nunique())


# ----------------------------------------------------------------------------- compute


def flops_per_token_rule(points: pd.DataFrame) -> Callable[[np.ndarray], np.ndarray]:
    """FLOPs per token as a function of N: a power law through the sizes' measured figures (exactly 6N when
    C = 6ND), so that the frontier and approach 2 can turn a compute budget into tokens at any size."""
    per = (points["flops"] / points["tokens"]).groupby(points["params"]).mean()
    if len(per) < 2:
        k = float(per.iloc[0] / per.index[0])
        return lambda n: k * np.asarray(n, float)
    slope, intercept = np.polyfit(np.log(per.index.to_numpy(float)), np.log(per.to_numpy(float)), 1)
    return lambda n: np.exp(intercept) * np.asarray(n, float) ** slope


def frontier(f: Fit, fpt: Callable, compute: np.ndarray, n_range: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """At each compute budget, the N that minimizes the fitted loss with D = C / fpt(N); (N_opt, D_opt, L)."""
    n = np.geomspace(n_range[0] / 1e3, n_range[1] * 1e4, 4000)
    d = compute[:, None] / fpt(n)[None, :]
    losses = f.loss(n[None, :], d)
    best = losses.argmin(axis=1)
    n_opt = n[best]
    return n_opt, compute / fpt(n_opt), losses[np.arange(len(compute)), best]


def power_law(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """y = k x^exponent, by least squares in logs."""
    exponent, log_k = np.polyfit(np.log(x), np.log(y), 1)
    return {"k": float(np.exp(log_k)), "exponent": float(exponent)}


# ----------------------------------------------------------------------------- approach 2


@dataclass
class IsoFlop:
    """The sizes' losses at one compute budget, the parabola in log N through them, and its vertex."""

    compute: float
    params: np.ndarray
    losses: np.ndarray
    parabola: np.ndarray  # coefficients in log N, highest first
    n_opt: float | None  # None: no vertex between the sizes (not convex, or the optimum lies outside)
    d_opt: float | None
    loss_opt: float | None


@dataclass
class Approach2:
    profiles: list[IsoFlop] = field(default_factory=list)
    n_law: dict | None = None  # N_opt = k C^exponent
    d_law: dict | None = None

    def to_dict(self) -> dict:
        return {"n_opt": self.n_law, "d_opt": self.d_law, "profiles": [
            {"compute": p.compute, "n_opt": p.n_opt, "d_opt": p.d_opt, "loss_opt": p.loss_opt,
             "sizes": [float(n) for n in p.params]} for p in self.profiles]}


def same_compute(points: pd.DataFrame) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Points already on iso-FLOP lines (a ladder designed by compute): (C, sizes, losses) for each compute
    (equal within 1%) that three sizes or more reached."""
    key = np.round(np.log(points["flops"].to_numpy(float)) / np.log(1.01))
    out = []
    for _, group in points.groupby(key):
        g = group.groupby("params")["loss"].mean()
        if len(g) >= 3:
            out.append((float(group["flops"].mean()), g.index.to_numpy(float), g.to_numpy(float)))
    return out


def interpolated(points: pd.DataFrame, count: int) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """A ladder by token multiples: each size's loss interpolated in log C between its own points, at `count`
    budgets spread over those that three sizes or more reach (which may be several stretches)."""
    curves = {}
    for n, group in points.groupby("params"):
        if len(group) >= 2:
            g = group.sort_values("flops")
            curves[float(n)] = (np.log(g["flops"].to_numpy(float)), g["loss"].to_numpy(float))
    if len(curves) < 3:
        return []
    grid = np.linspace(min(c[0][0] for c in curves.values()), max(c[0][-1] for c in curves.values()), 400)
    covered = grid[[sum(c[0][0] <= x <= c[0][-1] for c in curves.values()) >= 3 for x in grid]]
    if covered.size == 0:
        return []
    out = []
    for log_c in covered[np.unique(np.linspace(0, covered.size - 1, count).round().astype(int))]:
        sizes = np.array(sorted(n for n, c in curves.items() if c[0][0] <= log_c <= c[0][-1]))
        out.append((float(np.exp(log_c)), sizes, np.array([np.interp(log_c, *curves[n]) for n in sizes])))
    return out


def isoflop_profiles(points: pd.DataFrame, fpt: Callable, count: int = 6) -> Approach2:
    """Approach 2: the iso-FLOP profiles the points hold (else interpolated ones), each profile's vertex in
    log N, and power laws through the vertices."""
    out = Approach2()
    for compute, sizes, losses in same_compute(points) or interpolated(points, count):
        log_n = np.log(sizes)
        coeffs = np.polyfit(log_n, losses, 2)
        vertex = -coeffs[1] / (2 * coeffs[0]) if coeffs[0] > 0 else None
        if vertex is None or not log_n[0] <= vertex <= log_n[-1]:  # no minimum between the sizes
            out.profiles.append(IsoFlop(compute, sizes, losses, coeffs, None, None, None))
            continue
        n_opt = float(np.exp(vertex))
        out.profiles.append(IsoFlop(compute, sizes, losses, coeffs, n_opt, float(compute / fpt(n_opt)),
                                    float(np.polyval(coeffs, vertex))))
    found = [p for p in out.profiles if p.n_opt is not None]
    # A power law needs vertices over a range of budgets: two a few percent apart would give any exponent.
    if len(found) >= 2 and found[-1].compute >= MIN_SPAN * found[0].compute:
        c = np.array([p.compute for p in found])
        out.n_law = power_law(c, np.array([p.n_opt for p in found]))
        out.d_law = power_law(c, np.array([p.d_opt for p in found]))
    return out


# ----------------------------------------------------------------------------- the held-out check


def holdout(points: pd.DataFrame, **fit_args: object) -> tuple[Fit, pd.DataFrame]:
    """Fit every size but the largest, and predict each of the largest size's points."""
    largest = points["params"].max()
    f = fit(points[points["params"] < largest], **fit_args)
    rows = []
    for p in points[points["params"] == largest].sort_values("tokens").itertuples():
        pred = f.predict(float(p.params), float(p.tokens))
        rows.append({"run": p.run, "params": p.params, "tokens": p.tokens, "loss": p.loss, "predicted": pred["loss"],
                     "low": pred["low"], "high": pred["high"], "error": pred["loss"] - p.loss,
                     "error_pct": 100 * (pred["loss"] - p.loss) / p.loss,
                     "inside": bool(pred["low"] <= p.loss <= pred["high"])})
    return f, pd.DataFrame(rows)


def underdetermined(points: pd.DataFrame) -> str | None:
    """Why the five parameters cannot be told apart by these points, if they cannot."""
    if len(points) < 5 or points["params"].nunique() < 3 or points["tokens"].nunique() < 3:
        return (f"WARNING: {len(points)} points, {points['params'].nunique()} sizes, {points['tokens'].nunique()} "
                "token budgets: five parameters need five points, three sizes and three budgets; not determined")
    return None


# ----------------------------------------------------------------------------- the figure


def plot(points: pd.DataFrame, f: Fit, fpt: Callable, a2: Approach2, held: pd.DataFrame | None,
         count: str) -> Figure:
    """Left: loss against compute, each size's fitted curve and the compute-optimal frontier (held-out points
    as stars, against the held-out fit). Right, where approach 2 found any: its iso-FLOP profiles and vertices."""
    fig = Figure(figsize=(13, 5.2) if a2.profiles else (7.5, 5.2), layout="constrained")
    left, right = fig.subplots(1, 2) if a2.profiles else (fig.subplots(1, 1), None)
    sizes = sorted(points["params"].unique())
    color = dict(zip(sizes, colormaps["viridis"](np.linspace(0, 0.9, len(sizes))), strict=True))
    held_n = set(held["params"]) if held is not None else set()
    for n in sizes:
        at = points[points["params"] == n]
        c = np.geomspace(at["flops"].min() / 2, at["flops"].max() * 2, 100)
        left.plot(c, f.loss(n, c / fpt(n)), "--", color=color[n], lw=1)
        label = f"N={n:,.0f}" + (" (held out)" if n in held_n else "")
        left.scatter(at["flops"], at["loss"], color=color[n], marker="*" if n in held_n else "o",
                     s=120 if n in held_n else 30, zorder=3, label=label)
    c = np.geomspace(points["flops"].min() / 3, points["flops"].max() * 3, 60)
    left.plot(c, frontier(f, fpt, c, (min(sizes), max(sizes)))[2], "k-", lw=1.5, label="compute-optimal (fit)")
    v = f.values
    left.set(xscale="log", xlabel="compute C (training FLOPs)", ylabel="final val loss",
             title=f"L = {v['E']:.3g} + {v['A']:.3g}/N^{v['alpha']:.3f} + {v['B']:.3g}/D^{v['beta']:.3f}\n"
                   f"N: {COUNTS[count]}" + ("; fitted without the largest size (stars)" if held_n else ""))
    left.legend(fontsize=8)
    left.grid(True, which="major", alpha=0.3)
    if right is None:  # approach 2 found no compute budget that three sizes reach: nothing to draw
        return fig
    right.set(xscale="log", xlabel=f"N: {COUNTS[count]}", ylabel="loss at that compute",
              title="iso-FLOP profiles (approach 2)")
    shades = colormaps["plasma"](np.linspace(0, 0.85, max(1, len(a2.profiles))))
    for p, shade in zip(a2.profiles, shades, strict=False):
        n = np.geomspace(p.params.min() / 1.5, p.params.max() * 1.5, 80)
        right.plot(n, np.polyval(p.parabola, np.log(n)), color=shade, lw=1)
        right.scatter(p.params, p.losses, color=shade, s=20, label=f"C={p.compute:.3g}")
        if p.n_opt is not None:
            right.scatter([p.n_opt], [p.loss_opt], color=shade, marker="x", s=80)
    right.legend(fontsize=8)
    right.grid(True, which="major", alpha=0.3)
    return fig


# ----------------------------------------------------------------------------- the text


def table(rows: list[dict] | pd.DataFrame, formats: dict[str, str]) -> str:
    """A markdown table; `formats` gives each column's format spec (columns not in it are left out)."""
    frame = pd.DataFrame(rows)
    cols = [c for c in formats if c in frame]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in frame.to_dict("records"):
        lines.append("| " + " | ".join("-" if r[c] is None else format(r[c], formats[c]) for c in cols) + " |")
    return "\n".join(lines)


POINT_FORMATS = {"run": "", "params": ",.0f", "tokens": ",.0f", "flops": ".3g", "loss": ".4f"}
HELD_FORMATS = POINT_FORMATS | {"predicted": ".4f", "low": ".4f", "high": ".4f", "error": "+.4f", "error_pct": "+.2f",
                                "inside": ""}


def fit_text(f: Fit, title: str) -> str:
    values, intervals = f.values, f.intervals
    rows = [{"parameter": k, "value": values[k], "95% low": intervals[k][0], "95% high": intervals[k][1]}
            for k in NAMES]
    return (f"{title} ({f.points} points, {f.sizes} sizes; Huber delta {DELTA:g} on log L; {len(f.boot)} bootstrap "
            f"refits)\n\n" + table(rows, {"parameter": "", "value": ".4g", "95% low": ".4g", "95% high": ".4g"}))


def allocation_text(law: dict, a2: Approach2) -> str:
    lines = [f"compute-optimal (approach 3, the fit's frontier): N_opt ~ C^{law['n_opt']['exponent']:.3f}, "
             f"D_opt ~ C^{law['d_opt']['exponent']:.3f}"]
    if a2.n_law:
        lines.append(f"compute-optimal (approach 2, {sum(p.n_opt is not None for p in a2.profiles)} iso-FLOP "
                     f"vertices): N_opt ~ C^{a2.n_law['exponent']:.3f}, D_opt ~ C^{a2.d_law['exponent']:.3f}")
    else:
        found = sum(p.n_opt is not None for p in a2.profiles)
        lines.append(f"approach 2: {len(a2.profiles)} iso-FLOP profiles with three sizes or more, {found} with a "
                     "vertex between their sizes: too few for a power law (budgets overlapping more across sizes "
                     "give more)")
    if a2.profiles:
        rows = [{"compute": p.compute, "sizes": len(p.params), "n_opt": p.n_opt, "d_opt": p.d_opt,
                 "loss_opt": p.loss_opt} for p in a2.profiles]
        formats = {"compute": ".3g", "sizes": "d", "n_opt": ",.0f", "d_opt": ",.0f", "loss_opt": ".4f"}
        lines.append("\n" + table(rows, formats))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", help="run directories, or folders holding them")
    p.add_argument("--runs", metavar="GLOB", help="only runs whose name or directory name matches")
    p.add_argument("--points", type=Path, metavar="CSV",
                   help="a table of points instead: params, tokens, loss[, flops]")
    p.add_argument("--params", choices=["non_embedding", "total"],
                   help="how N is counted: runs default to non_embedding (without the token and position tables); "
                        "for a CSV it says what its params column counts")
    p.add_argument("--holdout", action="store_true", help="also fit all sizes but the largest and predict the largest")
    p.add_argument("--predict", action="append", default=[], metavar="N,D", help="the fitted loss at N and D tokens")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap refits for the intervals (default 200)")
    p.add_argument("--starts", type=int, default=32,
                   help="L-BFGS-B from this many best points of Chinchilla's grid (0: all 5,400; default 32)")
    p.add_argument("--isoflops", type=int, default=6, help="compute budgets for approach 2 (default 6)")
    p.add_argument("--seed", type=int, default=0, help="of the bootstrap resamples")
    p.add_argument("--json", type=Path, metavar="OUT", help="write every figure to this JSON file")
    p.add_argument("--out", type=Path, default=Path("log/plots/scaling.png"), help="the figure (.png)")
    return p


def load_points(args: argparse.Namespace) -> tuple[pd.DataFrame, str, str, list[str]]:
    """(points, how N is counted, where C comes from, runs left out) from the command line."""
    if args.points:
        points, compute = points_from_csv(args.points)
        return points, args.params or "csv", compute, []
    points, skipped = points_from_runs(args.paths or ["log"], args.runs, args.params or "non_embedding")
    return points, args.params or "non_embedding", "measured FLOPs per token x tokens", skipped


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    try:
        points, count, compute, skipped = load_points(args)
        predict = [tuple(float(x) for x in p.split(",")) for p in args.predict]
        if any(len(p) != 2 or min(p) <= 0 for p in predict):
            raise ValueError(f"--predict: expected N,D (two positive numbers), got {' '.join(args.predict)}")
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    if points["params"].nunique() < 2 + args.holdout:
        sys.exit(f"error: {len(points)} points of {points['params'].nunique()} sizes: a fit needs two sizes at least"
                 + (" besides the held-out one" if args.holdout else "") + "\n" + "\n".join(skipped))
    fit_args = {"bootstrap": args.bootstrap, "starts": args.starts, "seed": args.seed, "show": sys.stderr.isatty()}
    result = run(points, count, compute, predict, args.holdout, args.isoflops, fit_args)
    print(result.pop("text"))
    for line in skipped:
        print(f"left out: {line}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save(result.pop("figure"), args.out.parent, args.out.stem, svg=False)
    print(f"wrote {args.out}")
    if args.json:
        write_text(args.json, json.dumps(result | {"left_out": skipped}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return result


def run(points: pd.DataFrame, count: str, compute: str, predict: list[tuple[float, float]], held_out: bool,
        isoflops: int, fit_args: dict) -> dict:
    """Every figure of the analysis, its text and its figure."""
    fpt = flops_per_token_rule(points)
    full = fit(points, **fit_args)
    c = np.geomspace(points["flops"].min(), points["flops"].max(), 20)
    n_opt, d_opt, _ = frontier(full, fpt, c, (points["params"].min(), points["params"].max()))
    law = {"n_opt": power_law(c, n_opt), "d_opt": power_law(c, d_opt)}
    a2 = isoflop_profiles(points, fpt, isoflops)
    head = f"N: {COUNTS[count]}; C: {compute}"
    text = [head, "", table(points, POINT_FORMATS), ""]
    if warning := underdetermined(points):
        text += [warning, ""]
    text += [fit_text(full, "Approach 3: L(N, D) = E + A/N^alpha + B/D^beta"), "", allocation_text(law, a2)]
    out = {"params": count, "compute": compute, "points": points.to_dict("records"), "fit": full.to_dict(),
           "allocation": {"approach3": law, "approach2": a2.to_dict()}, "predict": []}
    for n, d in predict:
        out["predict"].append(p := full.predict(n, d))
        text.append(f"\npredicted loss at N={n:,.0f}, D={d:,.0f}: {p['loss']:.4f} "
                    f"(95%: {p['low']:.4f} .. {p['high']:.4f})")
    held = None
    if held_out:
        small, held = holdout(points, **fit_args)
        text += ["", fit_text(small, f"Held out: the fit without the largest size (N={points['params'].max():,.0f})")]
        if warning := underdetermined(points[points["params"] < points["params"].max()]):
            text += ["", warning]
        text += ["", "Its predictions of the largest size:", "", table(held, HELD_FORMATS)]
        out["holdout"] = {"fit": small.to_dict(), "predictions": held.to_dict("records")}
    figure = plot(points, small if held_out else full, fpt, a2, held, count)
    return out | {"text": "\n".join(text), "figure": figure}


if __name__ == "__main__":
    main()
