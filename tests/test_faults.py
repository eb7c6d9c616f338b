"""Faults during training: each is detected, named, and loses nothing that was saved."""

import json
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import torch

from harness import records
from harness.run_dir import RunDir, list_checkpoints, step_dir
from harness.train.checkpoint import load_latest
from tests.helpers import harness, kill_group, launch, rows, train_args

pytestmark = pytest.mark.slow
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def train(run_dir: Path, data: Path, *args: str, check: bool = True, nproc: int = 0) -> subprocess.CompletedProcess:
    return harness("harness.train", *train_args(run_dir, data, *args), check=check, env=ONE_THREAD, nproc=nproc)


# A learning rate this large sends the weights to inf at once: the tiny GPT's second step is NaN, so
# every step is saved to leave a good checkpoint (step 1) before it.
EXPLODE = ["--optim.lr", "1e4", "--schedule.min_lr", "0", "--optim.grad_clip", "0", "--schedule.steps", "10",
           "--checkpoint.every", "1"]


def test_nonfinite_loss_stops_the_run_and_names_step_and_checkpoint(shakespeare_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = train(run, shakespeare_dir, *EXPLODE, check=False)
    assert proc.returncode != 0
    saved = list_checkpoints(RunDir(run).checkpoints)
    assert saved, "a checkpoint from before the divergence must remain"
    last_good = saved[-1]
    stop = rows(run, "stop")[-1]
    assert stop["reason"] == "nonfinite"
    assert f"non-finite loss or gradient norm at step {stop['failed_step']}" in proc.stderr
    assert f"last good checkpoint: {last_good}" in proc.stderr
    assert int(last_good.name.split("_")[1]) < stop["failed_step"]  # nothing saved at or after the NaN
    weights = torch.load(last_good / "model.pt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in weights.values())
    error = json.loads(RunDir(run).errors.read_text().splitlines()[-1])
    assert error["error"].startswith("NonFiniteError") and error["rank"] == 0
    status = json.loads(harness("harness.status", str(run), "--json").stdout)
    assert status["state"] == "FAILED (NON-FINITE LOSS)"

    # A restart with the same spec would replay the divergence exactly: refused at once, nothing logged.
    lines = RunDir(run).metrics.read_text()
    again = train(run, shakespeare_dir, *EXPLODE, check=False)
    assert again.returncode != 0 and f"non-finite loss or gradient norm at step {stop['failed_step']}" in again.stderr
    assert "with the same spec would replay it" in again.stderr and RunDir(run).metrics.read_text() == lines
    # A changed spec resumes from the last good checkpoint.
    train(run, shakespeare_dir, *EXPLODE, "--train.on_nonfinite", "skip")
    start = rows(run, "start")[-1]
    assert start["checkpoint"] == str(last_good) and "train.on_nonfinite: 'stop' -> 'skip'" in start["spec_changes"]


def test_nonfinite_updates_can_be_skipped_instead(shakespeare_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = train(run, shakespeare_dir, *EXPLODE, "--train.on_nonfinite", "skip")
    skipped = proc.stdout.count("non-finite gradient norm, update skipped")
    assert skipped > 0
    rows = records.read(RunDir(run))  # strict JSON: non-finite values are logged as null
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 11))
    assert any(r["kind"] == "train" and r["grad_norm"] is None for r in rows)
    for line in RunDir(run).metrics.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # no NaN/Infinity
    final = torch.load(run / "checkpoints/step_00000010/model.pt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in final.values())


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(shakespeare_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Wide enough (~23M parameters) that writing a checkpoint takes a while.
    args = ["--model.n_embd", "384", "--schedule.steps", "6", "--checkpoint.every", "2"]
    proc = launch("harness.train", *train_args(run, shakespeare_dir, *args), log=tmp_path / "log", env=ONE_THREAD)
    partial = RunDir(run).checkpoints / ".step_00000004.tmp"
    deadline = time.time() + 300
    while not partial.exists():
        assert proc.poll() is None and time.time() < deadline, "the second save never started"
        time.sleep(0.002)
    kill_group(proc)  # mid-write
    assert partial.exists() and not (step_dir(RunDir(run).checkpoints, 4)).exists()
    path, state = load_latest(RunDir(run).checkpoints, rank=0, world_size=1)
    assert path.name == "step_00000002" and state["meta"]["step"] == 2

    train(run, shakespeare_dir, *args)
    starts = rows(run, "start")
    assert starts[-1]["step"] == 2 and starts[-1]["checkpoint"].endswith("step_00000002")
    assert not partial.exists()  # the half-written directory was cleaned up
    assert [p.name for p in list_checkpoints(RunDir(run).checkpoints)] == ["step_00000004", "step_00000006"]


def test_a_half_line_left_by_a_crash_stays_isolated(shakespeare_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(run, shakespeare_dir, "--schedule.steps", "4", "--checkpoint.every", "2")
    with open(RunDir(run).metrics, "a") as f:
        f.write('{"kind": "train", "step": 5, "loss": 4.2')  # a crash mid-write: no closing brace, no newline
    train(run, shakespeare_dir, "--schedule.steps", "6", "--checkpoint.every", "2")
    lines = RunDir(run).metrics.read_text().splitlines()
    broken = [n for n, line in enumerate(lines) if line.startswith('{"kind": "train", "step": 5, "loss": 4.2')]
    assert len(broken) == 1 and lines[broken[0]] == '{"kind": "train", "step": 5, "loss": 4.2'
    for n, line in enumerate(lines):  # every other line is whole JSON
        if n != broken[0]:
            json.loads(line)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = records.read(RunDir(run))
    assert len(caught) == 1 and "truncated or corrupt" in str(caught[0].message)
    assert sorted(r["step"] for r in rows if r["kind"] == "train" and r["restart"] == 1) == [5, 6]


def test_a_checkpoint_missing_a_rank_state_is_skipped_by_name(shakespeare_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(run, shakespeare_dir, "--checkpoint.every", "2", "--schedule.steps", "4", nproc=2)
    (run / "checkpoints/step_00000004/rank_00001.pt").unlink()
    proc = train(run, shakespeare_dir, "--checkpoint.every", "2", "--schedule.steps", "6", nproc=2)
    assert "skipping checkpoint" in proc.stderr and "step_00000004/rank_00001.pt: missing" in proc.stderr
    starts = rows(run, "start")
    assert starts[-1]["step"] == 2  # resumed from the newest complete checkpoint
