"""Failure triage: every run that did not finish gets one class from its own records, and
`harness.submit --resume --failed` resubmits exactly the runs a resubmission can cure.

The rules first, on run directories written the way the harness writes them; then each failure
that the test cluster can produce, produced for real on it (a memory limit, a NaN, a corrupt shard,
a hung rank, a cancellation, exhausted time-limit requeues, a node that dies), and a sweep of six
runs of which three fail differently.
"""

import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from harness import records
from harness.cluster.slurm import accounting
from harness.cluster.triage import classify
from harness.run_dir import JsonlAppender, RunDir
from tests.helpers import harness, last_step, rows, train_args
from tests.slurm_helpers import (
    harness_submit,
    kill_node,
    queued,
    restore_nodes,
    run,
    slurm_tiny,
    wait_until,
    worker_pid,
)

ONE_NODE = ["--cluster.nodes", "1", "--cluster.procs_per_node", "1", "--cluster.gpus_per_node", "0",
            "--cluster.cpus_per_task", "1", "--cluster.time_min", "60", "--cluster.signal_lead_s", "60"]


# ----------------------------------------------------------------------------- the rules


def a_run(tmp_path: Path, stop: dict | None = None, errors: list[str] = (), log: str = "") -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir(parents=True)
    out = JsonlAppender(run.metrics)
    out.write({"kind": "start", "restart": 0, "step": 0, "time": 10.0})
    if stop:
        out.write({"kind": "stop", "restart": 0, "time": 20.0, **stop})
    out.close()
    for i, error in enumerate(errors):
        out = JsonlAppender(run.errors)
        out.write({"time": 15.0 + i, "rank": i, "error": error})
        out.close()
    if log:
        (run.path / "job.log").write_text(log)
        run.record_job(job_id="1", log=str(run.path / "job.log"))
    return run


@pytest.mark.parametrize(("stop", "errors", "log", "kind"), [
    ({"reason": "failed"}, ["RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate 12"],
     "", "oom"),
    ({"reason": "failed"}, ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"], "", "oom"),
    ({"reason": "failed"}, ["DistBackendError: [Rank 0] Watchdog caught collective operation timeout",
                            "RuntimeError: Connection closed by peer"], "", "hung"),
    ({"reason": "failed"}, ["RuntimeError: [gloo/transport/tcp/pair.cc:534] Connection closed by peer [n2]:123"],
     "", "dead_rank"),
    ({"reason": "nonfinite", "failed_step": 7}, ["NonFiniteError: non-finite loss"], "", "nonfinite"),
    (None, ["RuntimeError: Connection reset by peer"],
     "slurmstepd-n1: error: *** JOB 4 ON n1 CANCELLED AT 2026-11-27T14:00:00 DUE TO NODE FAILURE ***\n",
     "node_failure"),
    ({"reason": "preempted"}, [], "submitit INFO - Job not requeued because: timed-out too many times.\n", "timeouts"),
    ({"reason": "preempted"}, [], "", "preempted"),
    ({"reason": "excluded"}, [], "", "node_failure"),
    (None, ["DataError: train_000001.bin: holds 10 tokens but manifest.json says 20"], "", "data"),
    (None, ["SpecError: model.n_layer: 2 -> 3"], "", "spec"),
    ({"reason": "preempted"}, [], "slurmstepd-n1: error: *** JOB 9 ON n1 CANCELLED AT 2026-11-27T14:00:00 ***\n",
     "cancelled"),
    ({"reason": "preempted"}, [], "slurmstepd-n3: error: *** STEP 13.0 ON n3 CANCELLED AT 2026-11-27T14:57:19 ***\n",
     "preempted"),  # scancel --signal=TERM reaches the step only: the job was not cancelled
    ({"reason": "failed"}, ["ValueError: something new"], "", "unknown"),
])
def test_the_class_comes_from_the_records(stop: dict | None, errors: list[str], log: str, kind: str,
                                          tmp_path: Path) -> None:
    failure = classify(a_run(tmp_path, stop, errors, log), queue_state=None)
    assert failure is not None and failure.kind == kind, failure
    assert failure.next_step and failure.evidence


def test_a_run_in_the_queue_or_finished_has_not_failed(tmp_path: Path) -> None:
    assert classify(a_run(tmp_path, {"reason": "preempted"}), queue_state="PENDING") is None
    assert classify(a_run(tmp_path / "b", {"reason": "finished"}), queue_state=None) is None


def test_a_recovered_node_failure_does_not_hide_the_later_one(tmp_path: Path) -> None:
    """The job log keeps every attempt: the latest line decides."""
    log = ("*** JOB 4 ON n1 CANCELLED AT 2026-11-27T14:00:00 DUE TO NODE FAILURE ***\n"
           "submitit INFO - Job not requeued because: timed-out too many times.\n")
    assert classify(a_run(tmp_path, {"reason": "preempted"}, [], log), queue_state=None).kind == "timeouts"


# ----------------------------------------------------------------------------- for real, on Slurm


def submit(run_dir: Path, data: Path, *extra: str, steps: int = 200) -> str:
    out = harness_submit(*train_args(run_dir, data, *slurm_tiny(steps)), *ONE_NODE, *extra).stdout
    return re.search(r"job (\d+)", out).group(1)


def corrupt_copy(data: Path, into: Path) -> Path:
    """The prepared data with its first train shard cut short, as a full disk or a killed copy leaves it."""
    shutil.copytree(data, into)
    shard = into / "train_000000.bin"
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    return into


def triage(run_dir: Path) -> dict:
    status = json.loads(harness("harness.status", str(run_dir), "--json").stdout)
    assert status["failure"] is not None, status
    return status["failure"]


@pytest.mark.usefixtures("slurm_cluster")
def test_each_failure_made_for_real_is_classified(shakespeare_dir: Path, tmp_path: Path) -> None:
    """Six one-node jobs at once (the cluster has six CPUs), each failing its own way."""
    runs = {kind: tmp_path / kind for kind in ("oom", "nonfinite", "data", "hung", "cancelled", "timeouts")}
    jobs = {
        # A memory limit on the node (cluster.setup runs it before torchrun): Adam's moments do not fit.
        "oom": submit(runs["oom"], shakespeare_dir, "--model.n_layer", "8", "--model.n_embd", "1024",
                      "--model.n_head", "8", "--cluster.setup", "ulimit -v 3500000", "--train.max_restarts", "0"),
        "nonfinite": submit(runs["nonfinite"], shakespeare_dir, "--optim.lr", "1e4", "--schedule.min_lr", "0",
                            "--optim.grad_clip", "0", "--checkpoint.every", "1"),
        "data": submit(runs["data"], corrupt_copy(shakespeare_dir, tmp_path / "bad-data")),
        "hung": submit(runs["hung"], shakespeare_dir, "--cluster.procs_per_node", "2", "--train.max_restarts", "0",
                       "--train.collective_timeout_min", "0.25"),
        "cancelled": submit(runs["cancelled"], shakespeare_dir),
        # time_min <= 10: submitit counts every USR2 as a time limit; the second one is past max_timeouts.
        "timeouts": submit(runs["timeouts"], shakespeare_dir, "--cluster.max_timeouts", "1", "--cluster.time_min",
                           "5"),
    }
    wait_until("the hung run's step 3", lambda: last_step(runs["hung"]) >= 3, logs=tmp_path)
    os.kill(worker_pid(runs["hung"], rank=1), signal.SIGSTOP)  # alive, but stuck: no error, no exit
    wait_until("the cancelled run's step 3", lambda: last_step(runs["cancelled"]) >= 3, logs=tmp_path)
    run("scancel", jobs["cancelled"])
    for attempt in (1, 2):
        wait_until(f"start {attempt} of the timed-out run, a few steps in", lambda attempt=attempt: len(
            rows(runs["timeouts"], "start")) >= attempt and last_step(runs["timeouts"]) >= 3 + 10 * (attempt - 1),
                   timeout=300, logs=tmp_path)
        run("scancel", "--signal=USR2", jobs["timeouts"])
        wait_until("the stop", lambda attempt=attempt: len(rows(runs["timeouts"], "stop")) >= attempt, logs=tmp_path)
    wait_until("every job to end", lambda: not any(queued(j) for j in jobs.values()), timeout=400, logs=tmp_path)

    found = {kind: triage(path) for kind, path in runs.items()}
    assert {kind: f["class"] for kind, f in found.items()} == {kind: kind for kind in runs}, found
    assert "can't allocate memory" in found["oom"]["evidence"] and "micro_batch" in found["oom"]["next"]
    assert "optim.lr" in found["nonfinite"]["next"] and "train_000000.bin" in found["data"]["evidence"]
    assert found["timeouts"]["curable"] and not found["cancelled"]["curable"] and not found["hung"]["curable"]
    text = harness("harness.status", str(tmp_path)).stdout  # the table says it too, a line per run
    assert text.count("next: ") == len(runs)
    statuses = [json.loads(line) for line in harness("harness.status", str(tmp_path), "--json").stdout.splitlines()]
    # Runs of one experiment are told apart by their directories; the cancelled job reads as sacct's
    # "CANCELLED by 0" says, not as its last word.
    assert sorted(s["name"] for s in statuses) == sorted(str(path) for path in runs.values())
    assert {Path(s["run_dir"]).name: s["state"] for s in statuses}["cancelled"] == "CANCELLED"


@pytest.mark.usefixtures("slurm_cluster")
def test_a_node_failure_without_requeue_is_classified(shakespeare_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    job = submit(run_dir, shakespeare_dir, "--cluster.nodes", "2", "--cluster.requeue", "false")
    try:
        wait_until("step 3", lambda: last_step(run_dir) >= 3, logs=run_dir / "slurm")
        kill_node(rows(run_dir, "start")[0]["hosts"][1])
        wait_until("the job to end", lambda: not queued(job), logs=run_dir / "slurm")
    finally:
        restore_nodes()
    failure = triage(run_dir)
    assert failure["class"] == "node_failure" and failure["curable"], failure


SWEEP = '''
import dataclasses, runpy
base = runpy.run_path({shakespeare!r})["spec"]
lrs = [2e-3, 1e4, 2e-3, 2e-3, 2e-3, 2e-3, 2e-3]  # the second diverges
procs = [1, 1, 1, 2, 1, 1, 1]  # the fourth loses one of its two ranks
# No torchrun restarts, so that a dead rank ends its job; but the diverged run may restart: it must not use them.
sweep = [dataclasses.replace(base, name=f"sweep-{{i}}", run_dir=f"{root}/sweep-{{i}}", seed=i,
                             optim=dataclasses.replace(base.optim, lr=lr, grad_clip=1.0 if lr < 1 else 0.0),
                             schedule=dataclasses.replace(base.schedule, min_lr=0.0),
                             train=dataclasses.replace(base.train, max_restarts=3 if lr > 1 else 0),
                             cluster=dataclasses.replace(base.cluster, procs_per_node=n))
         for i, (lr, n) in enumerate(zip(lrs, procs))]
'''


@pytest.mark.usefixtures("slurm_cluster")
def test_resume_failed_resubmits_exactly_the_curable_runs(shakespeare_dir: Path, tmp_path: Path) -> None:
    """Seven runs in one job array: one diverges (not curable, and its job fails without torchrun restarting
    it), one loses a rank to SIGKILL with no restarts left, one is preempted with no requeue, and one single-rank run's
    worker is SIGKILLed, as the kernel's OOM killer does (all three curable), three finish. --resume --failed
    resubmits the three and they finish; the diverged one is named with its next step; nothing is submitted
    twice."""
    sweep = tmp_path / "sweep.py"
    sweep.write_text(SWEEP.format(shakespeare=str(Path("experiments/shakespeare.py").resolve()), root=tmp_path))
    at = ONE_NODE.index("--cluster.procs_per_node")
    one_node = ONE_NODE[:at] + ONE_NODE[at + 2:]  # the sweep sets each run's ranks
    args = ["--data.dir", str(shakespeare_dir), *slurm_tiny(15), *one_node, "--cluster.requeue", "false",
            "--train.batch_tokens", "1024"]
    out = harness_submit(str(sweep), *args).stdout
    ids = dict(zip(range(7), re.findall(r"job (\d+_\d+)", out), strict=True))
    runs = [tmp_path / f"sweep-{i}" for i in range(7)]
    # Each fault as soon as its run is 3 steps in (the array runs six of the eight ranks at a time: run 6 waits).
    def at_step_3(i: int) -> None:
        wait_until(f"run {i} at step 3", lambda: last_step(runs[i]) >= 3, timeout=400, logs=tmp_path)

    at_step_3(3)
    os.kill(worker_pid(runs[3], rank=1), signal.SIGKILL)  # a rank dies; its peer fails on the lost connection
    at_step_3(4)
    run("scancel", "--signal=TERM", ids[4])  # stops at a checkpoint; nothing requeues it
    at_step_3(6)
    os.kill(worker_pid(runs[6], rank=0), signal.SIGKILL)  # the only rank dies, leaving no error of its own
    wait_until("the sweep to end", lambda: not any(queued(j) for j in ids.values()), timeout=600, logs=tmp_path)
    classes = [classify(RunDir(r), None) for r in runs]
    # Run 3's peer failed on the lost connection, but torchrun's summary names the signal: the cause wins.
    assert [c.kind if c else None for c in classes] == [None, "nonfinite", None, "killed", "preempted", None,
                                                        "killed"]
    assert "SIGKILL" in classes[6].evidence and "memory" in classes[6].next_step
    assert len(rows(runs[1], "start")) == 1  # refused at once, not by three torchrun restarts
    accounted = accounting(list(ids.values()))
    assert accounted[ids[1]][-1].state == "FAILED"  # so that no afterok evaluation follows a diverged run
    table = harness("harness.status", str(tmp_path)).stdout
    assert "sweep-6" in table and "a rank was killed by a signal" in table

    out = harness_submit(str(tmp_path), "--resume", "--failed").stdout
    assert len(re.findall(r"submitted sweep-\d: job (\d+)", out)) == 3, out
    assert "sweep-1" in out and "optim.lr" in out and out.count("nothing to do") == 3
    again = harness_submit(str(sweep), "--resume", "--failed").stdout  # while they are queued: skipped
    assert again.count("already queued or running") == 3 and not re.search(r"submitted sweep-", again), again
    wait_until("the resubmitted runs to finish", lambda: all(
        records.state(RunDir(runs[i])) == "finished" for i in (3, 4, 6)), timeout=400, logs=tmp_path)
    assert classify(RunDir(runs[1]), None).kind == "nonfinite"
