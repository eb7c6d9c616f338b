"""The trainer end to end: 2 ranks under torchrun, killed and resumed, must match a straight run bit for bit."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from harness.run_dir import RunDir
from tests.helpers import (
    finish,
    harness,
    kill_group,
    launch,
    rows,
    train_args,
    train_losses,
    wait_for_step,
)
from tests.slurm_helpers import worker_pid

pytestmark = pytest.mark.slow


def torchrun(run_dir: Path, data_dir: Path, *more: str, restarts: int = 0):
    """The tiny GPT for 20 steps on 2 ranks (~0.5 s a step on 2 CPU cores: slow enough to kill
    between its checkpoints at 10 and 20)."""
    return launch("harness.train", *train_args(run_dir, data_dir, *more), log=run_dir.with_suffix(".log"), nproc=2,
                  restarts=restarts)


def run_to_end(run_dir: Path, data_dir: Path, *more: str) -> None:
    finish(torchrun(run_dir, data_dir, *more), run_dir.with_suffix(".log"))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints/step_00000020/model.pt", weights_only=True)


@pytest.fixture(scope="module")
def straight_run(shakespeare_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    run_to_end(run, shakespeare_dir)
    return run


def test_killed_run_resumes_bit_identically(straight_run: Path, shakespeare_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = torchrun(run, shakespeare_dir)
    wait_for_step(run, 12, proc)
    kill_group(proc)  # the whole job at once, as a node failure would
    saved = sorted(p.name for p in RunDir(run).checkpoints.iterdir() if p.name.startswith("step_"))
    assert saved == ["step_00000010"], saved  # killed between the checkpoints at 10 and 20

    run_to_end(run, shakespeare_dir)

    straight = train_losses(straight_run)
    assert sorted(straight) == list(range(1, 21))
    resumed = train_losses(run, restart=1)
    assert sorted(resumed) == list(range(11, 21))  # picked up right after the checkpoint
    for step in range(11, 21):
        assert resumed[step] == straight[step], f"step {step}: {resumed[step]!r} != {straight[step]!r}"
    a, b = final_weights(straight_run), final_weights(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    logged = rows(run)
    starts = [r for r in logged if r["kind"] == "start"]
    assert [(s["restart"], s["step"]) for s in starts] == [(0, 0), (1, 10)]
    assert starts[1]["checkpoint"].endswith("step_00000010")
    assert set(train_losses(run)) == set(range(1, 21))  # every step is in the log
    assert logged[-1]["kind"] == "stop" and logged[-1]["reason"] == "finished" and logged[-1]["restart"] == 1


def test_resume_refuses_a_changed_model(straight_run: Path) -> None:
    proc = harness("harness.train", str(straight_run), "--model.n_layer", "3", check=False)
    assert proc.returncode != 0
    assert "model.n_layer: 2 -> 3" in proc.stderr, proc.stderr[-2000:]


def test_finished_run_restarts_as_a_no_op(straight_run: Path, shakespeare_dir: Path) -> None:
    before = RunDir(straight_run).metrics.read_bytes()
    run_to_end(straight_run, shakespeare_dir)
    assert "already finished" in straight_run.with_suffix(".log").read_text()
    assert RunDir(straight_run).metrics.read_bytes() == before


def test_zero1_resumes_exactly(shakespeare_dir: Path, tmp_path: Path) -> None:
    """ZeRO-1 shards the Adam moments across the 2 ranks; a checkpoint gathers them and a resume
    re-shards them, and the run continues bit for bit."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_to_end(straight, shakespeare_dir, "--optim.zero1", "true")
    proc = torchrun(killed, shakespeare_dir, "--optim.zero1", "true")
    wait_for_step(killed, 12, proc)
    kill_group(proc)
    run_to_end(killed, shakespeare_dir, "--optim.zero1", "true")
    a, b = train_losses(straight), train_losses(killed, restart=1)
    assert sorted(b) == list(range(11, 21)) and all(a[s] == b[s] for s in b)
    wa, wb = final_weights(straight), final_weights(killed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    optim = torch.load(killed / "checkpoints/step_00000020/optim.pt", weights_only=True)
    n_params = len(wa) - 1  # the tied head and embedding are one parameter
    assert len(optim["state"]) == n_params  # consolidated: every parameter's moments, not one rank's share


def test_auto_micro_batch_falls_back_on_cpu_and_is_kept(shakespeare_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    auto = ["--train.micro_batch", "auto", "--schedule.warmup", "1", "--checkpoint.every", "2"]
    proc = harness("harness.train", *train_args(run, shakespeare_dir, *auto, steps=2))
    assert "micro_batch=auto probes GPU memory; on cpu it falls back to 8" in proc.stderr
    spec = json.loads(RunDir(run).config.read_text())
    assert spec["train"]["micro_batch"] == 8  # the chosen size is part of the run's spec
    proc = harness("harness.train", str(run), "--train.micro_batch", "auto", "--schedule.steps", "3")
    assert "falls back" not in proc.stderr  # the resume reused the stored size instead of choosing again
    assert "micro_batch" not in proc.stdout.split("spec changed")[-1].split("\n")[0]
    assert json.loads(RunDir(run).config.read_text())["train"]["micro_batch"] == 8


def test_a_killed_worker_is_restarted_by_torchrun_and_resumes_exactly(straight_run: Path, shakespeare_dir: Path,
                                                                      tmp_path: Path) -> None:
    """One worker SIGKILLed: torchrun restarts the group (a new attempt, which must not trip over the
    dead attempt's rendezvous keys) and the run resumes from its checkpoint, bit for bit."""
    run = tmp_path / "run"
    proc = torchrun(run, shakespeare_dir, restarts=1)
    wait_for_step(run, 12, proc)
    os.kill(worker_pid(run, rank=1), signal.SIGKILL)
    finish(proc, run.with_suffix(".log"))
    resumed = train_losses(run, restart=1)
    assert sorted(resumed) == list(range(11, 21))
    straight = train_losses(straight_run)
    assert all(resumed[s] == straight[s] for s in resumed)
    a, b = final_weights(straight_run), final_weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_restarted_run_continues_the_same_wandb_run(shakespeare_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    for steps in (2, 4):  # the second start resumes from the first one's checkpoint
        harness("harness.train", *train_args(run, shakespeare_dir, "--log.wandb", "offline", "--schedule.warmup", "1",
                                             "--checkpoint.every", "2", steps=steps), env=env)
    run_id = (run / "wandb_id").read_text().strip()
    offline = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(name.endswith(f"-{run_id}") for name in offline)  # one wandb run, twice
    metas = [json.loads((p / "meta.json").read_text()) for p in RunDir(run).checkpoint_dirs()]
    assert {m["components"]["Recorder"]["wandb_id"] for m in metas} == {run_id}  # the recorder's checkpoint state
