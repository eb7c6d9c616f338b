"""harness.records: rows as written, rows of an older schema read as the current one, and the one run
summary that the trainer, status and analysis show."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from harness import records
from harness.records import Eval, Start, Stop, Train
from harness.run_dir import JsonlAppender, RunDir
from tests.helpers import REPO


def start(step: int, restart: int, t: float, version: int | None = records.SCHEMA_VERSION) -> dict:
    row = records.as_dict(Start(step=step, world_size=1, device="cpu (1 threads)", hosts=["n1"], job_id=None,
                                allocated_at=t - 5, checkpoint=None, init_from=None, parameters=100,
                                parameters_non_embedding=40, flops_per_token=600.0, total_steps=4, batch_tokens=10,
                                lr_scaling="none", peak_lr=1e-3, min_lr=1e-4), restart) | {"time": t}
    if version is None:
        del row["schema_version"]  # version 1 wrote none
    return row


def train(step: int, loss: float, restart: int, t: float) -> dict:
    return records.as_dict(Train(step=step, tokens=10 * step, loss=loss, lr=1e-3, grad_norm=1.0, seconds=1.0, steps=1,
                                 step_time=1.0, tokens_per_s=10.0 * step, mfu=None, peak_mem_gb=0.1), restart) | {
        "time": t}


def test_a_row_is_its_kind_its_fields_the_restart_and_the_time() -> None:
    row = records.as_dict(Stop(step=3, reason="preempted", signal="SIGUSR2"), restart=2)
    assert list(row) == ["kind", "step", "reason", "signal", "restart", "time"]  # optional Nones left out
    assert (row["kind"], row["reason"], row["restart"]) == ("stop", "preempted", 2)
    assert set(records.KINDS) == {"start", "ready", "train", "val", "eval", "sample", "checkpoint", "preflight",
                                  "stop"}


def test_each_start_s_rows_are_read_by_its_schema_version() -> None:
    """A run begun by version 1 (HellaSwag rows of kind "hellaswag") and resumed by version 2."""
    v1 = [start(0, 0, 100.0, version=None),
          {"kind": "hellaswag", "step": 2, "tokens": 20, "acc": 0.25, "acc_norm": 0.5, "n": 8, "seconds": 1.0,
           "restart": 0, "time": 101.0}]
    v2 = [start(2, 1, 200.0), records.as_dict(Eval(step=4, tokens=40, task="hellaswag_nanogpt", examples=8, acc=0.5,
                                                   acc_norm=0.75, seconds=1.0), 1) | {"time": 201.0}]
    rows = records.upgrade(v1 + v2)
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [(r["step"], r["task"], r["examples"], r["acc_norm"]) for r in evals] == [
        (2, "hellaswag_nanogpt", 8, 0.5), (4, "hellaswag_nanogpt", 8, 0.75)]
    assert "n" not in evals[0] and rows[2:] == v2  # version-2 rows are left as they are


def test_the_summary_is_derived_from_the_rows() -> None:
    """A run resumed from step 2 after logging step 3: the kept rows are the later start's."""
    rows = [start(0, 0, 100.0), train(1, 5.0, 0, 101.0), train(2, 4.0, 0, 102.0), train(3, 3.9, 0, 103.0),
            start(2, 1, 200.0), train(3, 3.5, 1, 201.0), train(4, 3.0, 1, 202.0),
            {"kind": "val", "step": 4, "tokens": 40, "loss": 3.2, "val_tokens": 64, "seconds": 0.5, "restart": 1,
             "time": 202.5},
            records.as_dict(Eval(step=4, tokens=40, task="b", examples=4, acc=0.5, acc_norm=None, seconds=0.1), 1)
            | {"time": 202.6},
            records.as_dict(Eval(step=4, tokens=40, task="a", examples=4, acc=0.25, acc_norm=0.75, seconds=0.1), 1)
            | {"time": 202.7},
            records.as_dict(Stop(step=4, reason="finished"), 1) | {"time": 203.0}]
    s = records.summarize(rows, jobs=[], now=203.0)
    assert (s.state, s.steps, s.total_steps, s.tokens, s.train_loss, s.val_loss, s.restarts) == (
        "finished", 4, 4, 40, 3.0, 3.2, 1)
    assert (s.parameters, s.parameters_non_embedding, s.flops_per_token) == (100, 40, 600.0)
    assert s.evals == {"a": {"step": 4, "examples": 4, "acc": 0.25, "acc_norm": 0.75, "headline": 0.75},
                       "b": {"step": 4, "examples": 4, "acc": 0.5, "acc_norm": None, "headline": 0.5}}
    assert s.eval_average == pytest.approx((0.75 + 0.5) / 2)
    assert s.tokens_per_s == 25.0  # the median of the kept rows (steps 1, 2, the later 3, 4): 10, 20, 30, 40
    assert s.devices == "1 x cpu (1 threads)" and s.hosts == ["n1"]
    assert s.ledger["goodput"] == s.goodput and s.device_hours == pytest.approx(s.wall_hours)
    assert s.wall_hours == pytest.approx((103.0 - 95.0 + 203.0 - 195.0) / 3600, abs=1e-6)  # not the gap between


def test_a_start_names_the_code_that_wrote_its_rows() -> None:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert records.code_version().split("+")[0] == head.stdout.strip()


# ----------------------------------------------------------------------------- the rows in columns, cached


def summary_of(rows: records.Rows | list[dict]) -> dict:
    return records.summarize(rows, jobs=[], now=1e12).to_dict()


def copy_of(run_dir: Path, tmp_path: Path) -> RunDir:
    """A copy of a real run's records, without the cache that reading it may have left."""
    copy = RunDir(tmp_path / "run")
    copy.path.mkdir()
    shutil.copy(RunDir(run_dir).metrics, copy.metrics)
    return copy


def test_the_columns_are_the_rows_and_the_cache_serves_the_next_read(seed_sweep: dict, tmp_path: Path) -> None:
    """A real run (val, checkpoint, sample and stop rows): the columns hold what the rows say, the summary
    from them is the one from the dicts, and a second read takes them from the cache as it is: a cache
    whose loss was altered (its key left as it was) is believed while metrics.jsonl is unchanged, and
    replaced as soon as it changes; lines appended are read on top of the cache."""
    run = copy_of(next(iter(seed_sweep.values())), tmp_path)
    rows = records.read(run)
    cols = records.columns(run)
    assert run.metrics_cache.exists() and len(cols) == len(rows)
    assert [r for r in rows if r["kind"] not in records.BULK_KINDS] == cols.whole()
    train = [r for r in rows if r["kind"] == "train"]
    assert cols["loss"][cols.kind("train")].tolist() == [r["loss"] for r in train]
    assert cols["step"].tolist() == [r["step"] for r in rows] and cols["kind"].tolist() == [r["kind"] for r in rows]
    assert summary_of(cols) == summary_of(rows)

    table, done = records.load_cache(run.metrics_cache)
    altered = records.Rows(table.table.set_column(table.table.schema.get_field_index("loss"), "loss",
                                                  pa.array(np.full(len(rows), 1.5))), table.whole())
    records.save_cache(run.metrics_cache, altered, done)
    assert set(records.columns(run)["loss"][cols.kind("train", "val")].tolist()) == {1.5}  # the cache, as it is

    out = JsonlAppender(run.metrics)
    out.write(train[-1] | {"step": 13, "loss": 0.25})
    out.close()
    appended = records.columns(run)
    assert appended["loss"][-1] == 0.25 and set(appended["loss"][:len(rows)][cols.kind("train")].tolist()) == {1.5}
    run.metrics.write_text(run.metrics.read_text().replace('"loss": 0.25', '"loss": 0.75'))  # rewritten, same size
    np.testing.assert_array_equal(records.columns(run)["loss"], [r.get("loss", np.nan) for r in rows] + [0.75])

    run.metrics_cache.write_bytes(b"not an arrow file")  # a broken cache is rebuilt
    assert summary_of(records.columns(run))["steps"] == 13 and records.load_cache(run.metrics_cache)[1] is not None


def test_a_cut_short_line_is_skipped_with_one_warning_at_every_read(seed_sweep: dict, tmp_path: Path) -> None:
    """As the dict reader: the half line a crash leaves is skipped with a warning naming the file and line,
    from the cache too; a restart's append ends that line, which stays one skippable line."""
    run = copy_of(next(iter(seed_sweep.values())), tmp_path)
    rows = records.read(run)
    with open(run.metrics, "a") as f:
        f.write('{"kind": "train", "step": 13, "tokens": 66')
    for _ in range(2):  # the first read makes the cache, the second reads it
        with pytest.warns(UserWarning, match=rf"metrics.jsonl: skipping 1 truncated .* \(line {len(rows) + 1}\)"):
            assert summary_of(records.columns(run)) == summary_of(rows)
    out = JsonlAppender(run.metrics)
    out.write(rows[-1] | {"time": rows[-1]["time"] + 1})
    out.close()
    with pytest.warns(UserWarning, match=rf"skipping 1 truncated .* \(line {len(rows) + 1}\)"):
        again = records.columns(run)
    with pytest.warns(UserWarning, match="skipping 1 truncated"):  # the dict reader says the same
        assert again.whole() == [r for r in records.read(run) if r["kind"] not in records.BULK_KINDS]
    assert len(again) == len(rows) + 1 and again.whole()[-1]["time"] == rows[-1]["time"] + 1


def test_rows_of_an_older_schema_are_upgraded_in_columns(tmp_path: Path) -> None:
    """A run begun by version 1 and resumed by version 2, read in columns: its HellaSwag rows are eval rows
    of hellaswag_nanogpt, so its summary has their scores; rows appended later read the same."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    v1 = [start(0, 0, 100.0, version=None),
          {"kind": "hellaswag", "step": 2, "tokens": 20, "acc": 0.25, "acc_norm": 0.5, "n": 8, "seconds": 1.0,
           "restart": 0, "time": 101.0}]
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in v1))
    assert records.columns(run).dicts("eval") == [
        {"kind": "eval", "restart": 0, "time": 101.0, "step": 2, "tokens": 20, "seconds": 1.0,
         "task": "hellaswag_nanogpt", "examples": 8, "acc": 0.25, "acc_norm": 0.5}]
    out = JsonlAppender(run.metrics)
    for row in (start(2, 1, 200.0), train(3, 3.5, 1, 201.0)):
        out.write(row)
    out.close()
    cols = records.columns(run)
    assert summary_of(cols) == summary_of(records.read(run))
    assert summary_of(cols)["evals"]["hellaswag_nanogpt"]["headline"] == 0.5
