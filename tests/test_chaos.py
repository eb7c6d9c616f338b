"""Chaos on a real Slurm cluster: a run interrupted six different ways finishes bit-identical to an
uninterrupted one, and a dead worker brings its job down promptly (a hung one: tests/test_nodes.py).

The interruptions come in a random order at random moments; the seed is printed so a failure can be
replayed with HARNESS_CHAOS_SEED=<seed>.
"""

import json
import math
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from harness.run_dir import RunDir
from tests.helpers import finish, harness, kill_group, last_step, launch, rows, train_losses
from tests.slurm_helpers import (
    CLUSTER,
    harness_submit,
    job_state,
    preempt_with_high_priority_job,
    progress,
    queued,
    run,
    slurm_tiny,
    wait_until,
    worker_pid,
)

pytestmark = pytest.mark.usefixtures("slurm_cluster")
STEPS = 120
LEAD_S = 300  # the job's signal lead: long, so that the time-limit warning can be made due at once


def interrupt(kind: str, job: str, run_dir: Path) -> None:
    if kind == "preempt":  # a job in the higher-priority partition takes the nodes
        preempt_with_high_priority_job()
    elif kind == "requeue":  # an operator's requeue: SIGTERM to every process, then back in the queue
        run("scontrol", "requeue", job)
    elif kind == "timelimit":
        # Bring the time limit close enough that its warning (USR2, LEAD_S before the limit) is due
        # at slurmctld's next time-limit check (every 30 s); limits are whole minutes, so the job
        # is left between LEAD_S - 60 and LEAD_S seconds, and the kill stays minutes away.
        elapsed = run("squeue", "-h", "-j", job, "-o", "%M").stdout.strip().replace("-", ":")
        seconds = sum(int(x) * f for x, f in zip(reversed(elapsed.split(":")), (1, 60, 3600, 86400), strict=False))
        run("scontrol", "update", f"JobId={job}", f"TimeLimit={math.ceil((seconds + LEAD_S - 60) / 60)}")
    elif kind == "usr2":  # the preemption signal by hand
        run("scancel", "--signal=USR2", job)
    elif kind == "term":  # SIGTERM to the job's processes, with no requeue from Slurm
        run("scancel", "--signal=TERM", job)
    elif kind == "kill_worker":  # one training process dies; torchrun restarts the group
        os.kill(worker_pid(run_dir, rank=1), signal.SIGKILL)
    else:
        raise ValueError(kind)


def run_interrupted(run_dir: Path, data: Path, kinds: list[str], rng: random.Random) -> None:
    """The run as a 2-node Slurm job, interrupted in each of `kinds` in turn at a random step, to its end."""
    out = harness_submit("experiments/shakespeare.py", "--run_dir", str(run_dir), "--data.dir", str(data),
                         *slurm_tiny(STEPS), *CLUSTER, "--cluster.signal_lead_s", str(LEAD_S)).stdout
    job = re.search(r"job (\d+)", out).group(1)
    logs = run_dir / "slurm"
    wait_until("the first start", lambda: progress(run_dir)[0] == 1, logs=logs)
    for n, kind in enumerate(kinds):
        count, step = progress(run_dir)
        at = step + rng.randint(2, 6)  # a random moment of this restart
        wait_until(f"step {at} before interruption {n + 1} ({kind})",
                   lambda at=at: job_state(job) == "RUNNING" and progress(run_dir)[1] >= at, logs=logs)
        print(f"interruption {n + 1}: {kind} at step {progress(run_dir)[1]}")
        interrupt(kind, job, run_dir)
        # The next start has trained at least one step of its own.
        wait_until(f"the restart after {kind}", lambda count=count: progress(run_dir)[0] > count
                   and progress(run_dir)[1] > rows(run_dir, "start")[-1]["step"], timeout=300, logs=logs)
        if kind == "timelimit":  # give the rest of the run its hour back
            run("scontrol", "update", f"JobId={job}", "TimeLimit=60")
    wait_until("the run to finish", lambda: not queued(job) and any(
        r["reason"] == "finished" for r in rows(run_dir, "stop")), timeout=600, logs=logs)


def test_six_interruptions_leave_no_trace(shakespeare_dir: Path, tmp_path: Path) -> None:
    seed = int(os.environ.get("HARNESS_CHAOS_SEED", random.SystemRandom().randrange(10**6)))
    print(f"chaos seed {seed}")
    rng = random.Random(seed)
    kinds = rng.sample(["preempt", "requeue", "usr2", "term", "kill_worker"], 5)
    kinds.insert(rng.randrange(3), "timelimit")  # early: its signal may take up to 30 s to come

    # The uninterrupted run trains beside the Slurm job, outside Slurm: most of its steps fall in the
    # job's restarts, which are mostly waiting for Slurm.
    run_dir, reference, log = tmp_path / "run", tmp_path / "reference", tmp_path / "reference.log"
    proc = launch("harness.train", "experiments/shakespeare.py", "--run_dir", str(reference), "--data.dir",
                  str(shakespeare_dir), *slurm_tiny(STEPS), nproc=2, log=log)
    try:
        run_interrupted(run_dir, shakespeare_dir, kinds, rng)
        finish(proc, log, timeout=900)
    finally:
        if proc.poll() is None:
            kill_group(proc)

    # Every step, from the latest restart that ran it, bit for bit; and the same final weights.
    assert train_losses(run_dir) == train_losses(reference)
    final = f"checkpoints/step_{STEPS:08d}/model.pt"
    a, b = (torch.load(d / final, weights_only=True) for d in (reference, run_dir))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Each restart is marked, and every line of the log is whole JSON.
    lines = RunDir(run_dir).metrics.read_text().splitlines()
    parsed = [json.loads(line) for line in lines]
    starts = [r for r in parsed if r["kind"] == "start"]
    assert [s["restart"] for s in starts] == list(range(len(starts))) and len(starts) >= len(kinds) + 1
    assert {r["step"] for r in parsed if r["kind"] == "train"} == set(range(1, STEPS + 1))
    signalled = [r for r in parsed if r["kind"] == "stop" and r["reason"] == "preempted"]
    assert len(signalled) >= len(kinds) - 2  # a requeue's SIGTERM or a dead worker may leave no save


def submit_fragile(run_dir: Path, data: Path, *extra: str) -> str:
    """A 2-node job whose workers are not restarted after a failure."""
    out = harness_submit("experiments/shakespeare.py", "--run_dir", str(run_dir), "--data.dir", str(data),
                         *slurm_tiny(200), *CLUSTER, "--train.max_restarts", "0", *extra).stdout
    return re.search(r"job (\d+)", out).group(1)


def test_a_dead_worker_brings_the_job_down_promptly(shakespeare_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    job = submit_fragile(run_dir, shakespeare_dir)
    wait_until("step 3", lambda: last_step(run_dir) >= 3, logs=run_dir / "slurm")
    os.kill(worker_pid(run_dir, rank=1), signal.SIGKILL)
    t0 = time.time()
    wait_until("the job to end", lambda: not queued(job), timeout=120, logs=run_dir / "slurm")
    assert time.time() - t0 < 60  # not the collective timeout (10 minutes)
    errors = [json.loads(line) for line in RunDir(run_dir).errors.read_text().splitlines()]
    assert errors and errors[0]["rank"] == 0  # the survivor saw its peer go and said so
    status = json.loads(harness("harness.status", str(run_dir), "--json").stdout)
    assert status["state"] == "FAILED" and status["error"]
    log = (run_dir / "slurm" / f"{job}_0_log.out").read_text()
    assert "torchrun exited with code" in log
