"""harness.records: rows as written, rows of an older schema read as the current one, and the one run
summary that the trainer, status and analysis show."""

import subprocess

import pytest

from harness import records
from harness.records import Eval, Start, Stop, Train
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
