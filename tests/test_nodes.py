"""Healthy nodes only, on the real 3-node Slurm cluster: a degraded node found by the preflight and
excluded (through harness.submit and through sbatch/train.sh), a node that dies mid-run, a rank that hangs,
a straggler named and moved off, the preflight alone and all-reduce bandwidth on 2 and 3 nodes, and the spec's
cluster set-up lines and environment on every node.

Nodes are degraded for real: the node's slurmd (or one rank's process), and so everything it runs,
is pinned to CPU 1, which busy processes keep busy. Every interrupted run must end with the losses of
a run that never saw the bad node, bit for bit.
"""

import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest
import torch

from harness.run_dir import RunDir, read_jsonl
from tests.helpers import harness, last_step, rows, train_args, train_losses
from tests.slurm_helpers import (
    CLUSTER,
    STEPS,
    TINY,
    harness_submit,
    kill_node,
    queued,
    restore_nodes,
    run,
    slowed,
    slurmd_pid,
    training_on,
    wait_until,
    worker_pid,
)

pytestmark = pytest.mark.usefixtures("slurm_cluster")


def job_field(job: str, name: str) -> str:
    out = run("scontrol", "show", "job", "-o", job).stdout
    return re.search(rf"\b{name}=(\S*)", out).group(1)


def finished(run_dir: Path, job: str) -> bool:
    return not queued(job) and any(r["reason"] == "finished" for r in rows(run_dir, "stop"))


def hosts_of_starts(run_dir: Path) -> list[set[str]]:
    return [set(s["hosts"]) for s in rows(run_dir, "start")]


def assert_moved_off_n2(run_dir: Path, job: str, reference_run: Path, reason: str) -> None:
    """The run stopped once on n1+n2 to move off n2, was requeued without it, and finished on n1+n3
    with every loss of the reference run."""
    starts, stops = hosts_of_starts(run_dir), rows(run_dir, "stop")
    assert starts[0] == {"n1", "n2"} and starts[-1] == {"n1", "n3"}, starts
    assert [s["reason"] for s in stops][0] == "excluded" and stops[-1]["reason"] == "finished"
    (exclusion,) = read_jsonl(RunDir(run_dir).exclusions)
    assert exclusion["hosts"] == ["n2"] and exclusion["reason"] == reason and exclusion["job_id"] == job
    assert job_field(job, "ExcNodeList") == "n2"  # kept by Slurm for any later requeue
    assert train_losses(run_dir) == train_losses(reference_run)
    status = json.loads(harness("harness.status", str(run_dir), "--json").stdout)
    assert status["state"] == "FINISHED" and status["excluded"] == ["n2"]


def test_a_degraded_node_is_found_by_the_preflight_and_left_behind(reference_run: Path, shakespeare_dir: Path,
                                                                   tmp_path: Path) -> None:
    run_dir, marks = tmp_path / "run", tmp_path / "setup-ran"
    setup = ["--cluster.setup", f"echo $SLURMD_NODENAME >> {marks}", "--cluster.env", "HARNESS_MARK=on every node"]
    # n2 turns slow once the run's worker there has loaded torch, before its preflight, which must
    # find it; start-up at full speed keeps the test short.
    with slowed([slurmd_pid("n2")], once=lambda: training_on("n2", run_dir)):
        out = harness_submit(*train_args(run_dir, shakespeare_dir, *TINY), *CLUSTER, *setup).stdout
        job = re.search(r"job (\d+)", out).group(1)
        wait_until("the exclusion of n2", lambda: RunDir(run_dir).excluded_hosts(), logs=run_dir / "slurm")
    wait_until("the run to finish", lambda: finished(run_dir, job), timeout=400, logs=run_dir / "slurm")

    assert_moved_off_n2(run_dir, job, reference_run, "preflight")
    first = [r for r in rows(run_dir, "preflight") if r["restart"] == 0]
    verdict = {r["host"]: r for r in first}
    assert set(verdict) == {"n1", "n2"} and verdict["n1"]["verdict"] == "ok" and verdict["n2"]["verdict"] == "bad"
    n1, n2 = verdict["n1"], verdict["n2"]
    assert n2["reasons"] and all(n2[k] < 0.5 * n1[k] for k in ("matmul_tflops", "memory_gbps"))
    assert all(float(bw) > 0 for bw in verdict["n1"]["busbw_gbps"].values())
    assert not [r for r in rows(run_dir, "train") if r["restart"] == 0]  # not one step on the bad node
    # cluster.setup ran on every node of every start; cluster.env reached every worker.
    assert sorted(set(marks.read_text().split())) == ["n1", "n2", "n3"]
    for start in rows(run_dir, "start"):
        assert start["node_env"] == {h: {"HARNESS_MARK": "on every node"} for h in start["hosts"]}


def test_the_sbatch_script_leaves_a_degraded_node_behind_too(reference_run: Path, shakespeare_dir: Path,
                                                              tmp_path: Path) -> None:
    run_dir, marks = tmp_path / "run", tmp_path / "setup-ran"
    log = tmp_path / "slurm-%j.out"
    with slowed([slurmd_pid("n2")], once=lambda: training_on("n2", run_dir)):
        out = run("sbatch", "-N", "2", "--gpus-per-node=0", "--cpus-per-task=1", "--time=60", "-o", str(log),
                  "sbatch/train.sh", *train_args(run_dir, shakespeare_dir, *TINY), "--cluster.setup",
                  f"echo $SLURMD_NODENAME >> {marks}", env=dict(os.environ, NPROC_PER_NODE="1")).stdout
        job = re.search(r"job (\d+)", out).group(1)
        wait_until("the exclusion of n2", lambda: RunDir(run_dir).excluded_hosts(), logs=tmp_path)
    wait_until("the run to finish", lambda: finished(run_dir, job), timeout=400, logs=tmp_path)
    assert_moved_off_n2(run_dir, job, reference_run, "preflight")
    text = Path(str(log).replace("%j", job)).read_text()
    assert f"requeueing job {job} excluding n2" in text and "training step ended: exit 0, run finished" in text
    assert sorted(set(marks.read_text().split())) == ["n1", "n2", "n3"]


def test_a_node_that_dies_mid_run_is_left_behind(reference_run: Path, shakespeare_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = harness_submit(*train_args(run_dir, shakespeare_dir, *TINY), *CLUSTER).stdout
    job = re.search(r"job (\d+)", out).group(1)
    try:
        wait_until("step 12", lambda: last_step(run_dir) >= 12, logs=run_dir / "slurm")
        assert hosts_of_starts(run_dir) == [{"n1", "n2"}]
        kill_node("n2")
        wait_until("the run to finish", lambda: finished(run_dir, job), timeout=400, logs=run_dir / "slurm")
        assert int(job_field(job, "Restarts")) >= 1  # Slurm requeued it after the node failure
    finally:  # the node comes back for the other tests
        restore_nodes()
    starts = hosts_of_starts(run_dir)
    assert starts[-1] == {"n1", "n3"}, starts
    # Nothing could be saved as n2 died: the next start went back to the step-10 checkpoint.
    assert rows(run_dir, "start")[-1]["step"] == 10 and rows(run_dir, "stop")[0]["reason"] != "preempted"
    assert train_losses(run_dir) == train_losses(reference_run)
    final = f"checkpoints/step_{STEPS:08d}/model.pt"
    a, b = (torch.load(d / final, weights_only=True) for d in (reference_run, run_dir))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_hung_rank_s_host_is_left_behind(reference_run: Path, shakespeare_dir: Path, tmp_path: Path) -> None:
    """Rank 1 frozen mid-run (SIGSTOP: alive, silent, no error): when the collective times out, its heartbeat
    names n2; every rank's stacks go to the error records; the job is requeued without n2 and finishes on n1 and
    n3, bit-identical to the run that never saw n2."""
    run_dir = tmp_path / "run"
    out = harness_submit(*train_args(run_dir, shakespeare_dir, *TINY), *CLUSTER, "--train.collective_timeout_min",
                         "0.25").stdout
    job = re.search(r"job (\d+)", out).group(1)
    wait_until("step 12", lambda: last_step(run_dir) >= 12, logs=run_dir / "slurm")
    os.kill(worker_pid(run_dir, rank=1), signal.SIGSTOP)
    wait_until("the run to finish", lambda: finished(run_dir, job), timeout=400, logs=run_dir / "slurm")
    assert_moved_off_n2(run_dir, job, reference_run, "hung")
    stacks = [e for e in read_jsonl(RunDir(run_dir).errors) if e.get("stacks")]
    assert stacks and stacks[0]["host"] == "n1" and "Thread" in stacks[0]["stacks"], stacks
    assert rows(run_dir, "stop")[0]["why"] == "hung"


def test_a_straggler_is_named_and_moved_off(reference_run: Path, shakespeare_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = harness_submit(*train_args(run_dir, shakespeare_dir, *TINY), *CLUSTER, "--cluster.straggler_ratio", "1.5",
                         "--cluster.straggler_steps", "8").stdout
    job = re.search(r"job (\d+)", out).group(1)
    wait_until("step 5", lambda: last_step(run_dir) >= 5, logs=run_dir / "slurm")
    hosts = rows(run_dir, "start")[0]["hosts"]
    assert set(hosts) == {"n1", "n2"}, hosts
    seen = []
    with slowed([worker_pid(run_dir, rank=hosts.index("n2"))]):  # the same degradation, mid-run, on one rank

        def straggler_in_status() -> bool:
            seen.append(json.loads(harness("harness.status", str(run_dir), "--json").stdout)["straggler"])
            return bool(seen[-1]) or bool(RunDir(run_dir).excluded_hosts())

        wait_until("harness.status to show the straggler", straggler_in_status, logs=run_dir / "slurm")
        wait_until("the move off n2", lambda: RunDir(run_dir).excluded_hosts(), logs=run_dir / "slurm")
    wait_until("the run to finish", lambda: finished(run_dir, job), timeout=400, logs=run_dir / "slurm")

    assert any(s and s.startswith("n2 (") for s in seen), seen
    slow = [r for r in rows(run_dir, "train") if r["restart"] == 0][-8:]
    assert all(r["slowest_host"] == "n2" and r["slowest_ratio"] > 1.5 for r in slow), slow
    (exclusion,) = read_jsonl(RunDir(run_dir).exclusions)
    assert exclusion["evidence"]["host"] == "n2" and len(exclusion["evidence"]["ratios"]) == 8
    starts, stops = hosts_of_starts(run_dir), rows(run_dir, "stop")
    assert starts[-1] == {"n1", "n3"} and stops[0]["reason"] == "excluded"
    assert stops[0]["step"] == rows(run_dir, "start")[1]["step"]  # saved when it moved: nothing recomputed
    assert train_losses(run_dir) == train_losses(reference_run)


@pytest.mark.parametrize("nodes", [2, 3])
def test_the_preflight_alone_and_allreduce_bandwidth(nodes: int, shakespeare_dir: Path, tmp_path: Path) -> None:
    proc = harness_submit("--preflight", "experiments/shakespeare.py", "--data.dir", str(shakespeare_dir),
                          "--run_dir", str(tmp_path / "run"), "--cluster.nodes", str(nodes), *CLUSTER[2:])
    assert [p.parent.name for p in tmp_path.glob("preflight/*/metrics.jsonl")] != []  # beside the run, not in it
    table = proc.stdout.split("waiting for it\n", 1)[1]
    lines = [line for line in table.splitlines() if re.match(r"n\d ", line)]
    assert [line.split()[0] for line in lines] == [f"n{i}" for i in range(1, nodes + 1)], proc.stdout
    assert all(line.split()[-1] == "ok" for line in lines), table

    port = 29000 + nodes
    comm = run("srun", "-N", str(nodes), "--ntasks-per-node=1", "--cpus-per-task=1", "bash", "-c",
               f"{sys.executable} -m torch.distributed.run --nnodes={nodes} --nproc-per-node=1 --rdzv-backend=c10d "
               f"--rdzv-endpoint=n1:{port} --rdzv-id=comm-{nodes} -m harness.bench comm --max-bytes 1048576",
               timeout=300).stdout
    (line,) = [x for x in comm.splitlines() if x.startswith("{")]  # rank 0 only
    result = json.loads(line)
    assert result["world_size"] == nodes and result["backend"] == "gloo"
    assert [s["bytes"] for s in result["sizes"]] == [1024, 4096, 16384, 65536, 262144, 1048576]
    assert all(s["busbw_gbps"] == pytest.approx(s["algbw_gbps"] * 2 * (nodes - 1) / nodes, rel=0.01, abs=0.002)
               for s in result["sizes"])
