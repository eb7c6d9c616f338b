"""A model ladder on a real Slurm cluster: `harness.submit LADDER.py` queues the trunk alone, the trunk queues each
branch when it writes the checkpoint that branch starts from, and a branch its trunk never queued (the trunk ran
outside Slurm) is named by harness.status and queued by `--resume --failed`. Two ranks, one per node, as in
tests/test_slurm.py; a branch equals a straight WSD run of the same world size step for step.
"""

import json
import re
from pathlib import Path

import pytest

from harness import records
from harness.cluster import branches
from harness.run_dir import RunDir
from harness.spec import init_run_dir, parse_cli
from tests.helpers import harness, train_losses, write_tiny_ladder
from tests.slurm_helpers import CLUSTER, harness_submit, queued, wait_until

pytestmark = pytest.mark.usefixtures("slurm_cluster")

# Two ranks of 2 x 64 tokens: the tiny ladder's 256 tokens a step.
TWO_RANKS = ["--train.micro_batch", "2", *CLUSTER]
SIZE = ((2, 2, 16),)  # one size: a trunk of 21 steps, branches from its steps 10 (13 steps) and 21 (26 steps)


def finished(run_dir: str) -> bool:
    return records.state(RunDir(run_dir)) == "finished"


def test_the_trunk_queues_its_branches(shakespeare_dir: Path, tmp_path: Path) -> None:
    file = write_tiny_ladder(tmp_path, shakespeare_dir, SIZE)
    trunk, *kids = parse_cli([str(file), *TWO_RANKS], "test", multiple=True)
    out = harness_submit(str(file), *TWO_RANKS).stdout
    assert len(re.findall(r"submitted \S+: job", out)) == 1, out  # the trunk alone
    for kid in kids:
        source, step = branches.branch_point(kid)
        assert f"{kid.name}: a branch from step {step} of {source.path}: queued when that checkpoint is written" in out
        assert RunDir(kid.run_dir).exists()  # written, for the trunk to queue
    for kid in kids:
        wait_until(f"{kid.name} to finish", lambda k=kid: finished(k.run_dir), timeout=400, logs=tmp_path)
        assert RunDir(kid.run_dir).last_job()["via"] == "submitit"  # queued by the trunk, through harness.submit
        (start, *_) = [r for r in records.read(RunDir(kid.run_dir)) if r["kind"] == "start"]
        assert start["branched_from"]["run"] == trunk.run_dir
    # The branch from step 10 equals a straight WSD run of its 13 steps on 2 ranks, bit for bit.
    branch = kids[0]
    straight = tmp_path / "straight"
    harness("harness.train", branch.run_dir, "--run_dir", str(straight), "--branch_from", "", "--name", "straight",
            nproc=2)
    shared = {s: v for s, v in train_losses(Path(trunk.run_dir)).items() if s <= 10}
    joined = shared | train_losses(Path(branch.run_dir))
    assert joined == train_losses(straight) and sorted(joined) == list(range(1, 14))


def test_resume_failed_queues_a_branch_nothing_queued(shakespeare_dir: Path, tmp_path: Path) -> None:
    """The trunk runs outside Slurm (as if it died between writing a checkpoint and queueing): status names its
    branches, `--resume --failed` queues them, and a second call leaves them alone."""
    file = write_tiny_ladder(tmp_path, shakespeare_dir, SIZE)
    trunk, *kids = parse_cli([str(file), *TWO_RANKS], "test", multiple=True)
    for spec in (trunk, *kids):
        init_run_dir(RunDir(spec.run_dir), spec)
    harness("harness.train", trunk.run_dir, nproc=2)
    status = harness("harness.status", str(tmp_path / "tiny"), "--json").stdout
    shown = {s["name"]: s for s in map(json.loads, status.splitlines())}
    for kid in kids:
        assert shown[kid.name]["state"] == "NOT QUEUED" and "never queued" in shown[kid.name]["branch"]
    out = harness_submit(str(tmp_path / "tiny"), "--resume", "--failed").stdout
    assert out.count("a branch never queued, and its checkpoint is written: submitting") == 2, out
    for kid in kids:
        wait_until(f"{kid.name} to finish", lambda k=kid: finished(k.run_dir), timeout=400, logs=tmp_path)
        job = str(RunDir(kid.run_dir).last_job()["job_id"])
        wait_until(f"{kid.name}'s job to leave the queue", lambda j=job: not queued(j), logs=tmp_path)
    again = harness_submit(str(tmp_path / "tiny"), "--resume", "--failed").stdout
    assert "never queued" not in again and again.count("finished: nothing to do") == 3, again
