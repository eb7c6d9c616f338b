"""Faults during training: each is detected, named, and loses nothing that was saved."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from harness.checkpoint import list_checkpoints, load_latest
from harness.metrics import read_metrics
from tests.run_log import rows

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--model.n_layer", "1", "--model.n_head", "2", "--model.n_embd", "32", "--train.micro_batch", "4",
         "--train.seq_len", "32", "--train.batch_tokens", "128", "--schedule.warmup", "1", "--eval.val_every", "0",
         "--eval.sample_every", "0", "--log.wandb", "disabled"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def train(run_dir: Path, data: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "harness.train", "experiments/shakespeare.py", "--run_dir",
                           str(run_dir), "--data.dir", str(data), *SMALL, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=ENV)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


# A learning rate this large sends the weights to inf within a few steps.
EXPLODE = ["--optim.lr", "1e4", "--schedule.min_lr", "0", "--optim.grad_clip", "0", "--schedule.steps", "30",
           "--checkpoint.every", "2"]


def test_nonfinite_loss_stops_the_run_and_names_step_and_checkpoint(shakespeare_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = train(run, shakespeare_dir, *EXPLODE, check=False)
    assert proc.returncode != 0
    saved = list_checkpoints(run / "checkpoints")
    assert saved, "a checkpoint from before the divergence must remain"
    last_good = saved[-1]
    stop = rows(run, "stop")[-1]
    assert stop["reason"] == "nonfinite"
    assert f"non-finite loss or gradient norm at step {stop['failed_step']}" in proc.stderr
    assert f"last good checkpoint: {last_good}" in proc.stderr
    assert int(last_good.name.split("_")[1]) < stop["failed_step"]  # nothing saved at or after the NaN
    weights = torch.load(last_good / "model.pt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in weights.values())
    error = json.loads((run / "errors.jsonl").read_text().splitlines()[-1])
    assert error["error"].startswith("NonFiniteError") and error["rank"] == 0
    status = json.loads(subprocess.run([sys.executable, "-m", "harness.status", str(run), "--json"], cwd=REPO,
                                       capture_output=True, text=True).stdout)
    assert status["state"] == "FAILED (NON-FINITE LOSS)"

    # A restart with the same spec would replay the divergence exactly: refused at once, nothing logged.
    lines = (run / "metrics.jsonl").read_text()
    again = train(run, shakespeare_dir, *EXPLODE, check=False)
    assert again.returncode != 0 and f"non-finite loss or gradient norm at step {stop['failed_step']}" in again.stderr
    assert "with the same spec would replay it" in again.stderr and (run / "metrics.jsonl").read_text() == lines
    # A changed spec resumes from the last good checkpoint.
    train(run, shakespeare_dir, *EXPLODE, "--train.on_nonfinite", "skip")
    start = rows(run, "start")[-1]
    assert start["checkpoint"] == str(last_good) and "train.on_nonfinite: 'stop' -> 'skip'" in start["spec_changes"]


def test_nonfinite_updates_can_be_skipped_instead(shakespeare_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = train(run, shakespeare_dir, *EXPLODE, "--train.on_nonfinite", "skip")
    skipped = proc.stdout.count("non-finite gradient norm, update skipped")
    assert skipped > 0
    rows = read_metrics(run / "metrics.jsonl")  # strict JSON: non-finite values are logged as null
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 31))
    assert any(r["kind"] == "train" and r["grad_norm"] is None for r in rows)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # no NaN/Infinity
    final = torch.load(run / "checkpoints/step_00000030/model.pt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in final.values())


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(shakespeare_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Wide enough (~23M parameters) that writing a checkpoint takes a while.
    args = [*SMALL, "--model.n_embd", "384", "--schedule.steps", "6", "--checkpoint.every", "2"]
    cmd = [sys.executable, "-m", "harness.train", "experiments/shakespeare.py", "--run_dir", str(run),
           "--data.dir", str(shakespeare_dir), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    partial = run / "checkpoints" / ".step_00000004.tmp"
    deadline = time.time() + 300
    while not partial.exists():
        assert proc.poll() is None and time.time() < deadline, "the second save never started"
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-write
    proc.wait()
    assert partial.exists() and not (run / "checkpoints" / "step_00000004").exists()
    path, state = load_latest(run / "checkpoints", rank=0, world_size=1)
    assert path.name == "step_00000002" and state["meta"]["step"] == 2

    subprocess.run(cmd, cwd=REPO, env=ENV, check=True, capture_output=True, timeout=600)
    starts = rows(run, "start")
    assert starts[-1]["step"] == 2 and starts[-1]["checkpoint"].endswith("step_00000002")
    assert not partial.exists()  # the half-written directory was cleaned up
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000004", "step_00000006"]


def test_a_half_line_left_by_a_crash_stays_isolated(shakespeare_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(run, shakespeare_dir, "--schedule.steps", "4", "--checkpoint.every", "2")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 5, "loss": 4.2')  # a crash mid-write: no closing brace, no newline
    train(run, shakespeare_dir, "--schedule.steps", "6", "--checkpoint.every", "2")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    broken = [n for n, line in enumerate(lines) if line.startswith('{"kind": "train", "step": 5, "loss": 4.2')]
    assert len(broken) == 1 and lines[broken[0]] == '{"kind": "train", "step": 5, "loss": 4.2'
    for n, line in enumerate(lines):  # every other line is whole JSON
        if n != broken[0]:
            json.loads(line)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = read_metrics(run / "metrics.jsonl")
    assert len(caught) == 1 and "truncated or corrupt" in str(caught[0].message)
    assert sorted(r["step"] for r in rows if r["kind"] == "train" and r["restart"] == 1) == [5, 6]


def test_a_checkpoint_missing_a_rank_state_is_skipped_by_name(shakespeare_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                "harness.train", "experiments/shakespeare.py", "--run_dir", str(run), "--data.dir",
                str(shakespeare_dir), *SMALL, "--train.batch_tokens", "256", "--checkpoint.every", "2"]
    subprocess.run([*torchrun, "--schedule.steps", "4"], cwd=REPO, check=True, capture_output=True, timeout=600)
    (run / "checkpoints/step_00000004/rank_00001.pt").unlink()
    proc = subprocess.run([*torchrun, "--schedule.steps", "6"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipping checkpoint" in proc.stderr and "step_00000004/rank_00001.pt: missing" in proc.stderr
    starts = rows(run, "start")
    assert starts[-1]["step"] == 2  # resumed from the newest complete checkpoint
