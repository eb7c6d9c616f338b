"""Submission, preemption and requeue on a real Slurm cluster (2 nodes on this machine, CPU, gloo).

A run interrupted by preemption and by `scontrol requeue` must finish with exactly the losses of an
uninterrupted run: same world size (2 ranks, one per node), same threads, bit for bit.
"""

import json
import os
import re
import textwrap
from pathlib import Path

import pytest

from harness.run_dir import RunDir, step_dir
from harness.spec import init_run_dir
from tests.helpers import harness, last_step, rows, train_losses
from tests.slurm_helpers import (
    CLUSTER,
    REPO,
    STEPS,
    TINY,
    harness_submit,
    preempt_with_high_priority_job,
    queued,
    run,
    slurm_tiny,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("slurm_cluster")

def assert_resumed_from_saved_checkpoints(run_dir: Path, stops_expected: int) -> None:
    all_rows = rows(run_dir)
    starts = [r for r in all_rows if r["kind"] == "start"]
    stops = [r for r in all_rows if r["kind"] == "stop"]
    assert [s["reason"] for s in stops] == ["preempted"] * stops_expected + ["finished"], stops
    for stop, start in zip(stops, starts[1:], strict=False):
        # the restart picked up exactly where the save on the signal left off
        assert start["step"] == stop["step"] and start["checkpoint"].endswith(f"step_{stop['step']:08d}")
    # two ranks on two distinct nodes of the three, every time
    assert all(len(set(s["hosts"])) == 2 and set(s["hosts"]) <= {"n1", "n2", "n3"} for s in starts), starts


@pytest.fixture(scope="module")
def reference(reference_run: Path) -> dict[int, float]:
    losses = train_losses(reference_run)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses


def test_evaluation_goes_through_slurm_too(reference_run: Path) -> None:
    from tests.hellaswag_data import hellaswag_dir

    out = harness_submit("--eval", "hellaswag_nanogpt", str(reference_run), "--data", str(hellaswag_dir()), "--limit",
                         "8", "--cluster.gpus_per_node", "0", "--cluster.procs_per_node", "2", "--cluster.time_min",
                         "30", "--cluster.signal_lead_s", "60").stdout
    job = re.search(r"job (\d+)", out).group(1)
    result = step_dir(RunDir(reference_run).checkpoints, STEPS) / "eval_hellaswag_nanogpt.json"
    wait_until("the evaluation", lambda: result.exists() and not queued(job), logs=reference_run / "eval-slurm")
    found = json.loads(result.read_text())
    assert found["examples"] == 8 and 0 <= found["acc_norm"] <= 1 and found["world_size"] == 2


def test_submitit_job_survives_preemption_and_requeue(reference: dict, shakespeare_dir: Path,
                                                      tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = harness_submit("experiments/shakespeare.py", "--run_dir", str(run_dir), "--data.dir",
                         str(shakespeare_dir), *TINY, *CLUSTER).stdout
    job = re.search(r"job (\d+)", out).group(1)
    slurm_logs = run_dir / "slurm"
    wait_until("step 5", lambda: last_step(run_dir) >= 5, logs=slurm_logs)

    status = json.loads(harness("harness.status", str(run_dir), "--json").stdout)
    assert status["job"] == job and status["state"] == "RUNNING" and status["step"] >= 5

    preempt_with_high_priority_job()
    wait_until("the resume after preemption", lambda: len(rows(run_dir, "start")) >= 2, logs=slurm_logs)
    resumed_at = rows(run_dir, "start")[1]["step"]
    wait_until("a few steps after the resume", lambda: last_step(run_dir) >= resumed_at + 4, logs=slurm_logs)
    run("scontrol", "requeue", job)  # SIGTERM to every process, then back into the queue
    wait_until("the run to finish", lambda: not queued(job) and any(
        r["reason"] == "finished" for r in rows(run_dir, "stop")), timeout=300, logs=slurm_logs)

    assert_resumed_from_saved_checkpoints(run_dir, stops_expected=2)
    assert train_losses(run_dir) == reference  # every step, bit for bit
    logs = sorted(p.name for p in slurm_logs.glob("*_log.out"))
    assert logs == [f"{job}_0_log.out", f"{job}_1_log.out"]  # one srun task per node
    status = json.loads(harness("harness.status", str(run_dir), "--json").stdout)
    assert status["state"] == "FINISHED" and status["step"] == STEPS and status["restarts"] == 2


def test_sbatch_script_survives_preemption(reference: dict, shakespeare_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    log = tmp_path / "slurm-%j.out"
    out = run("sbatch", "-N", "2", "--gpus-per-node=0", "--cpus-per-task=1", "--time=60", "-o", str(log),
              "sbatch/train.sh", "experiments/shakespeare.py", "--run_dir", str(run_dir), "--data.dir",
              str(shakespeare_dir), *TINY, env=dict(os.environ, NPROC_PER_NODE="1")).stdout
    job = re.search(r"job (\d+)", out).group(1)
    wait_until("step 5", lambda: last_step(run_dir) >= 5, logs=tmp_path)
    # The script renames the job after the experiment, so squeue shows it as harness.submit's jobs.
    assert run("squeue", "-h", "-j", job, "-o", "%j").stdout.strip() == "shakespeare"
    preempt_with_high_priority_job()
    wait_until("the run to finish", lambda: not queued(job) and any(
        r["reason"] == "finished" for r in rows(run_dir, "stop")), timeout=300, logs=tmp_path)

    assert_resumed_from_saved_checkpoints(run_dir, stops_expected=1)
    assert train_losses(run_dir) == reference
    text = Path(str(log).replace("%j", job)).read_text()
    assert "requeueing job" in text or "DUE TO PREEMPTION" in text
    records = [json.loads(line) for line in RunDir(run_dir).jobs.read_text().splitlines()]
    jobs = [j for j in records if j.get("event") != "step_end"]  # one record per start of the job
    ends = [j["outcome"] for j in records if j.get("event") == "step_end"]  # and how each job step ended
    assert {j["job_id"] for j in jobs} == {job} and len(jobs) == 2 and jobs[0]["via"] == "sbatch"
    assert ends == ["preempted", "finished"], ends


def test_sweep_goes_in_as_one_job_array(shakespeare_dir: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep.py"
    sweep.write_text(textwrap.dedent(f"""
        import dataclasses, runpy
        base = runpy.run_path({str(REPO / "experiments/shakespeare.py")!r})["spec"]
        sweep = [dataclasses.replace(base, name=f"sweep-lr{{lr:g}}", run_dir=f"{tmp_path}/sweep-lr{{lr:g}}",
                                     optim=dataclasses.replace(base.optim, lr=lr)) for lr in (1e-3, 3e-3)]
    """))
    one_node = ["--cluster.nodes", "1", *CLUSTER[2:]]  # both array tasks fit on the cluster at once
    out = harness_submit(str(sweep), "--data.dir", str(shakespeare_dir), *slurm_tiny(4), *one_node).stdout
    ids = re.findall(r"job (\d+_\d+)", out)
    assert len(ids) == 2 and ids[0].split("_")[0] == ids[1].split("_")[0]  # one array
    runs = [tmp_path / "sweep-lr0.001", tmp_path / "sweep-lr0.003"]
    wait_until("both runs to finish", lambda: all(
        any(r["reason"] == "finished" for r in rows(d, "stop")) for d in runs), logs=tmp_path)
    for d, lr in zip(runs, (1e-3, 3e-3), strict=True):
        assert json.loads(RunDir(d).config.read_text())["optim"]["lr"] == lr
        assert last_step(d) == 4
    assert train_losses(runs[0]) != train_losses(runs[1])


@pytest.mark.parametrize(("args", "message"), [
    (["--cluster.partition", "nope"], "cluster.partition: 'nope' is not a partition"),
    (["--data.dir", "/nonexistent/data"], "data.dir"),
    (["--train.batch_tokens", "1000"], "train.batch_tokens: 1,000 is not divisible"),
    (["--schedule.warmup", "100"], "schedule.warmup"),
])
def test_bad_submissions_fail_before_queueing(args: list[str], message: str, shakespeare_dir: Path,
                                              tmp_path: Path) -> None:
    before = set(run("squeue", "-h", "-o", "%A").stdout.split())
    proc = harness_submit("experiments/shakespeare.py", "--run_dir", str(tmp_path / "run"), "--data.dir",
                          str(shakespeare_dir), *TINY, *CLUSTER, *args, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert set(run("squeue", "-h", "-o", "%A").stdout.split()) <= before  # no new job
    assert not (tmp_path / "run").exists()  # nothing created either


@pytest.mark.parametrize(("source", "message"), [
    ("spec = Experiment(\n", "syntax error"),
    ("x = 1\n", "defines neither"),
    ("raise RuntimeError('boom')\n", "raised RuntimeError: boom"),
])
def test_bad_experiment_files_are_refused(source: str, message: str, tmp_path: Path) -> None:
    exp = tmp_path / "bad.py"
    exp.write_text("from harness.spec import Experiment\n" + source)
    proc = harness_submit(str(exp), check=False)
    assert proc.returncode != 0 and str(exp) in proc.stderr and message in proc.stderr, proc.stderr


def test_resubmitting_a_changed_spec_is_refused(shakespeare_dir: Path, tmp_path: Path) -> None:
    args = ["experiments/shakespeare.py", "--run_dir", str(tmp_path / "run"), "--data.dir", str(shakespeare_dir),
            *TINY, *CLUSTER]
    harness_submit(*args, "--dry-run")  # prints, creates nothing
    assert not (tmp_path / "run").exists()
    from harness import spec as config
    from harness.run_dir import RunDir

    (spec,) = config.parse_cli(args, "test")
    init_run_dir(RunDir(spec.run_dir), spec)
    proc = harness_submit(*args, "--optim.lr", "1e-3", check=False)
    assert proc.returncode != 0 and f"optim.lr: {spec.optim.lr} -> 0.001" in proc.stderr, proc.stderr


def test_local_runs_the_same_job_without_slurm_and_resume_continues_it(shakespeare_dir: Path,
                                                                      tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["experiments/shakespeare.py", "--run_dir", str(run_dir), "--data.dir", str(shakespeare_dir), *slurm_tiny(4),
            *CLUSTER]
    proc = harness_submit(*args, "--local")  # one node: 1 process here, not 2 nodes
    assert "--nproc-per-node=1" in proc.stdout
    assert last_step(run_dir) == 4 and rows(run_dir, "start")[0]["world_size"] == 1
    # --resume resubmits the run through Slurm, with a change that keeps its checkpoints valid.
    out = harness_submit(str(run_dir), "--resume", "--schedule.steps", "6", "--cluster.nodes", "1").stdout
    job = re.search(r"job (\d+)", out).group(1)
    wait_until("the resumed run to finish", lambda: not queued(job) and rows(run_dir, "stop")[-1]["reason"]
               == "finished" and last_step(run_dir) == 6, logs=run_dir / "slurm")
    starts = rows(run_dir, "start")
    assert [s["step"] for s in starts] == [0, 4] and starts[1]["spec_changes"].startswith("schedule.steps: 4 -> 6")


def test_the_queue_is_read_for_many_jobs_in_one_call(tmp_path: Path) -> None:
    """slurm.queue_states: an array of three tasks and a plain job, found by either id Slurm gives an array
    task (7_1, or its own raw id), a job Slurm never had left out; cancelled, they are listed so (until
    MinJobAge) or no more."""
    from harness.cluster.slurm import accounting, queue_states

    sleep = ["sbatch", "--parsable", "-N", "1", "--cpus-per-task=1", "--time=5", "-o", str(tmp_path / "%j.out")]
    array = run(*sleep, "--array=0-2", "--wrap", "sleep 120").stdout.strip()
    plain = run(*sleep, "--wrap", "sleep 120").stdout.strip()
    tasks = [f"{array}_{i}" for i in range(3)]
    try:
        wait_until("the jobs to be listed", lambda: len(queue_states([*tasks, plain])) == 4)
        raw = dict(line.split() for line in run("squeue", "-h", "-r", "-j", array, "-o", "%i %A").stdout.splitlines())
        found = queue_states([*tasks, plain, "999999"])
        assert sorted(found) == sorted([*tasks, plain])
        assert set(found.values()) <= {"PENDING", "RUNNING", "CONFIGURING"}
        running = [t for t in tasks if raw.get(t, t) != array]  # a task that started has an id of its own
        assert queue_states([raw[t] for t in running]) == {raw[t]: found[t] for t in running}
    finally:
        run("scancel", array, plain, check=False)
    wait_until("the jobs to be cancelled", lambda: set(queue_states([*tasks, plain]).values()) <= {"CANCELLED"})
    # Accounting (the test cluster keeps it) says CANCELLED, the first word of sacct's "CANCELLED by 0".
    wait_until("accounting to know the jobs", lambda: {j: a[-1].state for j, a in (
        accounting([*tasks, plain]) or {}).items()} == dict.fromkeys([*tasks, plain], "CANCELLED"))
