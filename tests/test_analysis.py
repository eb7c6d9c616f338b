"""analysis/: plots and the summary table from real trainer runs (a straight run, a second learning rate,
a run killed and resumed, and a copy with a truncated last line), checked against the logs themselves."""

import json
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import lr_schedule, plots
from analysis.runs import load_run, load_runs
from harness import records
from harness.run_dir import RunDir
from harness.spec import load_experiment_file, parse_cli, read_spec
from tests.helpers import PNG, REPO, finish, harness, kill_group, last_step, launch, rows, train_args, wait_for_step

BATCH_TOKENS = 512
STEPS = 16
# The tiny GPT on Shakespeare: 16 steps of 512 tokens, val every 4 steps, a checkpoint every 5.
TINY = ["--train.batch_tokens", str(BATCH_TOKENS), "--schedule.warmup", "2", "--checkpoint.every", "5",
        "--eval.val_every", "4", "--eval.val_tokens", "4096"]
# HellaSwag's jsonl format (ctx, 4 endings, label): the trainer scores these for real, a few are enough.
HELLASWAG_ROWS = [
    {"ctx": "ROMEO: But soft, what light through yonder", "endings": ["window breaks.", "table eats.",
     "river sings loudly.", "horse of the kitchen."], "label": 0},
    {"ctx": "JULIET: O Romeo, Romeo, wherefore art", "endings": ["the spoon.", "thou Romeo?", "green apples.",
     "seven doors away."], "label": 1},
    {"ctx": "HAMLET: To be, or not to be, that is", "endings": ["a cabbage.", "blue.", "the question.",
     "running north."], "label": 2},
    {"ctx": "KING: Now is the winter of our", "endings": ["toast.", "lamp shade.", "boots.", "discontent."],
     "label": 3},
]
# The truncated copy warns wherever it is read; the test about that warning checks it explicitly.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*truncated or corrupt line:UserWarning")]


def start(run_dir: Path, data_dir: Path, *more: str) -> subprocess.Popen:
    # One thread each: three runs share the (possibly 2-core) machine.
    return launch("harness.train", *train_args(run_dir, data_dir, *TINY, *more, steps=STEPS),
                  log=run_dir.with_suffix(".log"), env={"OMP_NUM_THREADS": "1"})


def run_to_end(proc: subprocess.Popen) -> None:
    finish(proc, Path(proc.args[proc.args.index("--run_dir") + 1]).with_suffix(".log"))


@pytest.fixture(scope="module")
def runs(shakespeare_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("runs")
    hellaswag = root / "hellaswag_val.jsonl"
    hellaswag.write_text("".join(json.dumps(r) + "\n" for r in HELLASWAG_ROWS))
    dirs = {k: root / k for k in ("lr3e-3", "lr1e-2", "resumed")}
    straight = start(dirs["lr3e-3"], shakespeare_dir, "--name", "tiny-lr3e-3")
    other_lr = start(dirs["lr1e-2"], shakespeare_dir, "--name", "tiny-lr1e-2", "--optim.lr", "1e-2",
                      "--eval.tasks", "hellaswag_nanogpt", "--eval.tasks_every", "8",
                      "--eval.tasks_data", str(hellaswag))
    resumed = ["--name", "tiny-resumed"]
    proc = start(dirs["resumed"], shakespeare_dir, *resumed)
    wait_for_step(dirs["resumed"], 8, proc, timeout=300)
    kill_group(proc)
    # While a run is unfinished (here: killed, no stop row) the tools must work on its partial log.
    out = root / "plots-partial"
    plots.main([str(dirs["resumed"]), "--out", str(out)])
    partial = pd.read_csv(out / "summary.csv")
    killed_at = last_step(dirs["resumed"])
    run_to_end(start(dirs["resumed"], shakespeare_dir, *resumed))
    run_to_end(straight)
    run_to_end(other_lr)

    # A copy of the straight run whose log ends in half a JSON object, as when a run is killed mid-write.
    dirs["truncated"] = root / "truncated"
    dirs["truncated"].mkdir()
    shutil.copy(RunDir(dirs["lr3e-3"]).config, dirs["truncated"])
    text = RunDir(dirs["lr3e-3"]).metrics.read_text()
    RunDir(dirs["truncated"]).metrics.write_text(text + '{"kind": "train", "step": 17, "tokens": 87')
    return {"root": root, "dirs": dirs, "partial": partial, "killed_at": killed_at}


def latest_rows(run_dir: Path, kind: str) -> dict[int, dict]:
    """step -> row; a step logged again by a later restart (later in the file) replaces the earlier one."""
    out = {}
    for r in records.read(RunDir(run_dir)):
        if r["kind"] == kind:
            out[r["step"]] = r
    return out


def restart_seconds(run_dir: Path) -> list[float]:
    times: dict[int, list[float]] = {}
    for r in records.read(RunDir(run_dir)):
        times.setdefault(r["restart"], []).append(r["time"])
    return [max(t) - min(t) for _, t in sorted(times.items())]


# ----------------------------------------------------------------------------- loading


def test_resumed_run_has_one_point_per_step_from_the_latest_restart(runs: dict) -> None:
    run_dir = runs["dirs"]["resumed"]
    rows = records.read(RunDir(run_dir))
    starts = [r for r in rows if r["kind"] == "start"]
    assert len(starts) == 2
    resumed_from = starts[1]["step"]  # the checkpoint the second start loaded (5, or 10 if it got that far)
    first_life = [r["step"] for r in rows if r["kind"] == "train" and r["restart"] == 0]
    assert resumed_from in (5, 10) and max(first_life) > resumed_from, "no step was logged twice"
    repeated = range(resumed_from + 1, max(first_life) + 1)

    run = load_run(run_dir)
    train = run.curve("train")
    assert train["step"].tolist() == list(range(1, STEPS + 1))
    assert train["restart"].tolist() == [0 if s <= resumed_from else 1 for s in range(1, STEPS + 1)]
    second_life = {r["step"]: r["loss"] for r in rows if r["kind"] == "train" and r["restart"] == 1}
    assert train.set_index("step")["loss"][list(repeated)].tolist() == [second_life[s] for s in repeated]
    # The raw frame keeps both: every step once, the repeated ones twice.
    assert len(run.rows("train")) == STEPS + len(repeated)
    assert sorted(run.rows("train")["restart"].unique()) == [0, 1]
    assert run.curve("val")["step"].tolist() == [0, 4, 8, 12, 16]


def test_training_hours_exclude_the_gap_between_restarts(runs: dict) -> None:
    run_dir = runs["dirs"]["resumed"]
    rows = records.read(RunDir(run_dir))
    run = load_run(run_dir)
    expected = sum(restart_seconds(run_dir)) / 3600
    assert run.raw["hours"].max() == pytest.approx(expected, rel=1e-9)
    # The time between the kill and the second start is not training time.
    assert expected < (rows[-1]["time"] - rows[0]["time"]) / 3600
    assert run.curve("train")["hours"].is_monotonic_increasing


def test_truncated_last_line_warns_and_is_skipped(runs: dict) -> None:
    with pytest.warns(UserWarning, match="truncated"):
        copy = load_run(runs["dirs"]["truncated"])
    original = load_run(runs["dirs"]["lr3e-3"])
    pd.testing.assert_frame_equal(copy.curve("train"), original.curve("train"))
    pd.testing.assert_frame_equal(copy.curve("val"), original.curve("val"))


# ----------------------------------------------------------------------------- plots and table


def assert_png(path: Path) -> None:
    assert path.exists(), path
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 5_000, path


def test_plots_and_summary_match_the_logs(runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "plots"
    with pytest.warns(UserWarning, match="truncated"):
        plots.main([str(runs["root"]), "--out", str(out), "--svg"])
    for stem in ("loss", "throughput", "lr", "evals", "ledger"):
        assert_png(out / f"{stem}.png")
        assert b"<svg" in (out / f"{stem}.svg").read_bytes()[:2000]
    printed = capsys.readouterr().out

    table = pd.read_csv(out / "summary.csv").set_index("run_dir")
    assert len(table) == 4
    for name, run_dir in runs["dirs"].items():
        row = table.loc[str(run_dir)]
        assert row["run"] in printed
        train, val = latest_rows(run_dir, "train"), latest_rows(run_dir, "val")
        starts = rows(run_dir, "start")
        assert row["steps"] == STEPS == max(train)
        assert row["tokens"] == max(train) * BATCH_TOKENS
        assert row["final_val_loss"] == pytest.approx(val[max(val)]["loss"])
        assert row["best_val_loss"] == pytest.approx(min(r["loss"] for r in val.values()))
        # The first step of each start is start-up (compilation, warm-up), not timed: its row has no speed.
        assert row["median_tokens_per_s"] == pytest.approx(statistics.median(
            r["tokens_per_s"] for r in train.values() if r["tokens_per_s"] is not None))
        assert np.isnan(row["median_mfu"])  # CPU: no peak FLOP/s, no MFU
        assert row["restarts"] == len(starts) - 1 == (1 if name == "resumed" else 0)
        assert row["state"] == "finished"
        # Time in allocations (harness.ledger): every row's time within it, and the gaps between starts not.
        rounding = 1e-6  # the summary's hours have 6 decimals
        assert sum(restart_seconds(run_dir)) / 3600 - rounding <= row["wall_hours"] <= (
            rows(run_dir)[-1]["time"] - starts[0]["allocated_at"]) / 3600 + rounding
        assert row["device_hours"] == pytest.approx(row["wall_hours"])  # world size 1
        if name != "truncated":  # the same summary the trainer wrote at its last stop (harness.records)
            written = json.loads(RunDir(run_dir).summary.read_text())
            shown = [row[k] for k in ("steps", "tokens", "final_val_loss", "goodput", "eval_average")]
            kept = [written[k] for k in ("steps", "tokens", "val_loss", "goodput", "eval_average")]
            assert [None if pd.isna(v) else v for v in shown] == kept  # the csv's empty cell is JSON's null
        evals = latest_rows(run_dir, "eval")
        if name == "lr1e-2":
            assert sorted(evals) == [0, 8, 16] and {r["task"] for r in evals.values()} == {"hellaswag_nanogpt"}
            assert row["hellaswag_nanogpt"] == row["eval_average"] == evals[16]["acc_norm"]
        else:
            assert not evals and np.isnan(row["hellaswag_nanogpt"]) and np.isnan(row["eval_average"])
    md = (out / "summary.md").read_text()
    assert md.count("\n") == 2 + 4 and "tiny-resumed" in md

    # The run seen while it was down (killed, no stop row, rows minutes old at most): running, partial.
    partial = runs["partial"].iloc[0]
    assert partial["state"] == "running" and partial["restarts"] == 0
    assert partial["steps"] == runs["killed_at"] and partial["tokens"] == runs["killed_at"] * BATCH_TOKENS


def test_rerun_is_idempotent_and_runs_glob_filters(runs: dict, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    for _ in range(2):  # the second pass overwrites, and removes the figure its runs no longer support
        plots.main([str(runs["root"]), "--out", str(out), "--runs", "tiny-lr*", "--x", "step"])
        table = pd.read_csv(out / "summary.csv")
        # The truncated copy kept its original's name: both are told apart by their directories.
        assert sorted(table["run"]) == ["tiny-lr1e-2", f"tiny-lr3e-3 ({runs['dirs']['lr3e-3']})",
                                        f"tiny-lr3e-3 ({runs['dirs']['truncated']})"]
        assert_png(out / "evals.png")
    plots.main([str(runs["root"]), "--out", str(out), "--runs", "resumed"])  # a directory name matches too
    assert pd.read_csv(out / "summary.csv")["run"].tolist() == ["tiny-resumed"]
    assert not (out / "evals.png").exists()
    assert sorted(p.name for p in out.iterdir()) == ["ledger.png", "loss.png", "lr.png", "summary.csv",
                                                    "summary.md", "throughput.png"]
    with pytest.raises(SystemExit):
        plots.main([str(runs["root"]), "--out", str(out), "--runs", "no-such-run"])


def test_x_hours(runs: dict, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    plots.main([str(runs["dirs"]["resumed"]), str(runs["dirs"]["lr3e-3"]), "--out", str(out), "--x", "hours"])
    for stem in ("loss", "throughput", "lr"):
        assert_png(out / f"{stem}.png")
    fig = plots.plot_loss(load_runs([runs["dirs"]["resumed"]]), "hours")
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and "hours" in ax.get_xlabel()
    # The last val point: all of the first life's time plus the second's up to that row.
    rows = records.read(RunDir(runs["dirs"]["resumed"]))
    second_start = min(r["time"] for r in rows if r["restart"] == 1)
    last_val = [r for r in rows if r["kind"] == "val"][-1]
    expected = (restart_seconds(runs["dirs"]["resumed"])[0] + last_val["time"] - second_start) / 3600
    hours = max(line.get_xdata().max() for line in ax.get_lines() if len(line.get_xdata()))
    assert hours == pytest.approx(expected)


def test_logged_lr_is_the_schedule(runs: dict) -> None:
    run_dir = runs["dirs"]["lr1e-2"]
    steps, lrs = lr_schedule.schedule_curve(read_spec(RunDir(run_dir)))
    logged = latest_rows(run_dir, "train")
    assert steps.tolist() == sorted(logged)
    np.testing.assert_allclose(lrs, [logged[s]["lr"] for s in steps.tolist()], rtol=1e-12)


def test_command_line_entry_point(runs: dict, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    done = harness("analysis.plots", str(runs["dirs"]["lr3e-3"]), "--out", str(out))
    assert "| tiny-lr3e-3 | finished | 16 | 8,192 |" in done.stdout
    assert "evals.png skipped" in done.stderr
    assert_png(out / "loss.png")


def test_val_loss_reference_matches_the_data(runs: dict, shakespeare_dir: Path, tmp_path: Path) -> None:
    """GPT-2's val loss is drawn only for its own dataset: the manifest's source, else the directory's name."""

    def run_on(data_dir: Path, name: str) -> Path:
        run_dir = tmp_path / name
        run_dir.mkdir()
        shutil.copy(RunDir(runs["dirs"]["lr3e-3"]).metrics, run_dir)
        spec = json.loads(RunDir(runs["dirs"]["lr3e-3"]).config.read_text())
        spec["data"]["dir"] = str(data_dir)
        RunDir(run_dir).config.write_text(json.dumps(spec))
        return run_dir

    def references(run_dir: Path) -> dict[str, float]:
        ax = plots.plot_loss(load_runs([run_dir]), "tokens").axes[0]
        return {line.get_label(): line.get_ydata()[0] for line in ax.get_lines() if "GPT-2" in line.get_label()}

    assert references(runs["dirs"]["lr3e-3"]) == {}  # Shakespeare: no published GPT-2 number
    assert list(references(run_on(tmp_path / "data" / "openwebtext", "owt")).values()) == [3.12]  # no manifest
    fineweb = tmp_path / "data" / "edu10b"
    fineweb.mkdir(parents=True)
    manifest = json.loads((shakespeare_dir / "manifest.json").read_text()) | {"source": "fineweb-edu-10b"}
    (fineweb / "manifest.json").write_text(json.dumps(manifest))
    assert list(references(run_on(fineweb, "fineweb")).values()) == [3.29]


# ----------------------------------------------------------------------------- lr schedule from a spec


def test_lr_schedule_from_the_spec(tmp_path: Path) -> None:
    spec = load_experiment_file(REPO / "experiments/shakespeare.py")[0]
    steps, lrs = lr_schedule.schedule_curve(spec)
    # The default experiment: peak 2e-3 after 30 warmup steps, cosine over the other 546 to 2e-4.
    assert (spec.optim.lr, spec.schedule.warmup, spec.schedule.steps, spec.schedule.min_lr) == (2e-3, 30, 576, 2e-4)
    assert steps.tolist() == list(range(1, 577))
    lr = dict(zip(steps.tolist(), lrs.tolist(), strict=True))
    assert lr[1] == pytest.approx(2e-3 / 30)  # the first update already moves
    assert lr[15] == pytest.approx(1e-3) and lr[30] == lr[31] == 2e-3  # half way up; the peak, twice
    assert lr[31 + 273] == pytest.approx(1.1e-3)  # half way down the cosine: (2e-3 + 2e-4) / 2
    # The last update, 545/546 of the way: 2e-4 + 9e-4 * (1 - cos(pi / 546)) = 2e-4 + 1.49e-8.
    assert lr[576] == pytest.approx(2.000149e-4, rel=1e-6)

    out = tmp_path / "lr.png"
    lr_schedule.main([str(REPO / "experiments/shakespeare.py"), "--out", str(out), "--schedule.warmup", "20"])
    assert_png(out)
    (overridden,) = parse_cli([str(REPO / "experiments/shakespeare.py"), "--schedule.warmup", "20"], "test")
    assert int(np.argmax(lr_schedule.schedule_curve(overridden)[1])) + 1 == 20

    sweep = parse_cli([str(REPO / "experiments/shakespeare_lr_sweep.py")], "test", multiple=True)
    fig = lr_schedule.plot_schedules(sweep, "sweep")
    assert len(fig.axes[0].get_lines()) == len(sweep) == 3
    for line, s in zip(fig.axes[0].get_lines(), sweep, strict=True):
        np.testing.assert_array_equal(line.get_ydata(), lr_schedule.schedule_curve(s)[1])
    lr_schedule.main([str(REPO / "experiments/shakespeare_lr_sweep.py"), "--out", str(tmp_path / "sweep.svg")])
    assert b"<svg" in (tmp_path / "sweep.svg").read_bytes()[:2000]
