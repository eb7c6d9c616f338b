"""The goodput ledger of a real run on the local Slurm cluster, interrupted twice: preempted (it saves
at the signal, so nothing is lost), then one rank killed after a checkpoint (torchrun restarts the
workers from that checkpoint, so the steps after it are done twice)."""

import json
import os
import re
import signal
from pathlib import Path

import pytest

from harness import records
from harness.ledger import CATEGORIES, starts
from harness.run_dir import RunDir, read_jsonl
from tests.helpers import harness, last_step, rows, train_args
from tests.slurm_helpers import (
    CLUSTER,
    harness_submit,
    preempt_with_high_priority_job,
    queued,
    slurm_tiny,
    wait_until,
    worker_pid,
)

pytestmark = pytest.mark.usefixtures("slurm_cluster")


def test_the_ledger_of_a_run_interrupted_twice_adds_up(shakespeare_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = harness_submit(*train_args(run_dir, shakespeare_dir, *slurm_tiny()), *CLUSTER, "--train.max_restarts",
                         "1", "--eval.val_every", "10", "--eval.val_tokens", "4096").stdout
    job = re.search(r"job (\d+)", out).group(1)
    logs = run_dir / "slurm"
    wait_until("step 5", lambda: last_step(run_dir) >= 5, logs=logs)
    preempt_with_high_priority_job()
    wait_until("the resume", lambda: len(rows(run_dir, "start")) >= 2, logs=logs)
    resumed = rows(run_dir, "start")[1]["step"]
    saved = (resumed // 10 + 1) * 10  # the next periodic checkpoint after the resume
    wait_until(f"step {saved + 3}", lambda: last_step(run_dir) >= saved + 3, logs=logs)
    os.kill(worker_pid(run_dir, rank=1), signal.SIGKILL)
    wait_until("the run to finish", lambda: not queued(job) and records.state(RunDir(run_dir)) == "finished",
               timeout=400, logs=logs)

    run = RunDir(run_dir)
    found = starts(records.columns(run), read_jsonl(run.jobs))
    assert [s.restart for s in found] == [0, 1, 2]
    for s in found:  # every second of every start in a category, up to a second
        assert set(s.seconds) == set(CATEGORIES) and abs(s.seconds["other"]) < 1.0, (s.restart, s.seconds)
        assert s.seconds["startup"] > 0 and s.seconds["productive"] > 0
    first, second, third = found
    assert first.seconds["lost"] == 0  # it saved at the signal: the next start began where it stopped
    killed = [r for r in rows(run_dir, "train") if r["restart"] == 1]
    restarted_at = rows(run_dir, "start")[2]["step"]
    assert restarted_at == saved and max(r["step"] for r in killed) >= saved + 3
    assert second.seconds["lost"] == pytest.approx(sum(r["seconds"] for r in killed if r["step"] > saved))
    assert second.seconds["lost"] > 0 and third.seconds["lost"] == 0
    # The preemption put the job back in the queue; torchrun's restart kept the allocation.
    assert second.queued_at == first.ended_at and second.allocated_at > second.queued_at
    assert third.queued_at is None and third.allocated_at == second.ended_at

    status = json.loads(harness("harness.status", str(run_dir), "--json").stdout)
    assert 0 < status["goodput"] < 1
    summary = json.loads(RunDir(run_dir).summary.read_text())
    assert summary["ledger"]["device_hours"]["lost"] > 0
    out = tmp_path / "plots"
    table = harness("analysis.plots", str(run_dir), "--out", str(out)).stdout
    assert (out / "ledger.png").stat().st_size > 10_000 and "goodput" in table
