"""A run directory written by the previous release (the commit before the restructuring, from this
repository's own history) resumes under the current code and continues exactly: its config.json of spec
version 1 is read through the migration and left as it is, its version-1 HellaSwag rows read as
`eval` rows of the registry's hellaswag_nanogpt, and every loss after the resume equals an uninterrupted
current-code run's bit for bit."""

import shutil
import subprocess
import sys
import tarfile

import pytest

from harness import records
from harness.run_dir import RunDir, run_state
from harness.spec import read_spec
from tests.helpers import REPO, harness, kill_group, launch, train_args, train_losses, wait_for_step

PREVIOUS_RELEASE = "f3b81693050fb6ee91dedf8464395b7c91af5cd9"  # main before the wings (issue 24)
STEPS = 20  # a checkpoint every 10 (tests/helpers.py: tiny)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory):
    """The previous release's harness package and experiments, exported from git history."""
    if shutil.which("git") is None or subprocess.run(["git", "-C", str(REPO), "cat-file", "-e",
                                                      f"{PREVIOUS_RELEASE}^{{commit}}"]).returncode != 0:
        pytest.skip(f"the previous release {PREVIOUS_RELEASE[:8]} is not in this checkout's git history")
    root = tmp_path_factory.mktemp("previous")
    archive = root / "release.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), PREVIOUS_RELEASE, "harness", "experiments"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root


def test_a_run_of_the_previous_release_resumes_exactly(previous_release, shakespeare_dir, hellaswag, tmp_path):
    eval_args = ("--eval.tasks", "hellaswag_nanogpt", "--eval.tasks_every", "10", "--eval.tasks_limit", "8",
                 "--eval.tasks_data", str(hellaswag))
    old_eval = ("--eval.hellaswag_every", "10", "--eval.hellaswag_limit", "8", "--eval.hellaswag_data", str(hellaswag))
    # The previous release trains (run from its own directory, so that Python imports its harness) and is
    # killed after its step-10 checkpoint.
    run = tmp_path / "run"
    log = tmp_path / "old.log"
    proc = launch("harness.train", *train_args(run, shakespeare_dir, *old_eval, steps=STEPS), log=log,
                  env={"OMP_NUM_THREADS": "1"}, cwd=previous_release)
    wait_for_step(run, 12, proc, timeout=300)
    kill_group(proc)
    old_config = RunDir(run).config.read_bytes()
    assert b"spec_version" not in old_config and b"hellaswag_every" in old_config  # spec version 1

    # The current code continues it from its directory.
    harness("harness.train", str(run), env={"OMP_NUM_THREADS": "1"})
    assert RunDir(run).config.read_bytes() == old_config  # read through the migration, not rewritten
    assert read_spec(RunDir(run)).eval.tasks == ["hellaswag_nanogpt"]
    rows = records.read(RunDir(run))
    starts = [r for r in rows if r["kind"] == "start"]
    assert [s.get("schema_version", 1) for s in starts] == [1, 2] and starts[1]["checkpoint"].endswith("00000010")
    evals = [(r["restart"], r["step"], r["task"]) for r in rows if r["kind"] == "eval"]
    assert evals == [(0, 0, "hellaswag_nanogpt"), (0, 10, "hellaswag_nanogpt"), (1, 20, "hellaswag_nanogpt")]
    assert run_state(rows) == "finished"

    # An uninterrupted run of the current code, with the same spec in the current names.
    fresh = tmp_path / "fresh"
    harness("harness.train", *train_args(fresh, shakespeare_dir, *eval_args, steps=STEPS), env={"OMP_NUM_THREADS": "1"})
    resumed, straight = train_losses(run, restart=1), train_losses(fresh)
    assert sorted(resumed) == list(range(11, STEPS + 1))
    assert all(resumed[s] == straight[s] for s in resumed), [(s, resumed[s], straight[s]) for s in resumed]
    old_scores = {r["step"]: r["acc_norm"] for r in rows if r["kind"] == "eval"}
    new_scores = {r["step"]: r["acc_norm"] for r in records.read(RunDir(fresh)) if r["kind"] == "eval"}
    assert old_scores == new_scores  # the same weights at steps 10 and 20 score the same


def test_a_job_queued_by_the_previous_release_unpickles(previous_release, tmp_path):
    """submitit pickles the job a node runs when it is submitted and again on requeue: a job queued before
    the restructuring names harness.cluster.TorchrunJob and harness.cluster.ClusterConfig."""
    import pickle

    from harness.cluster.job import TorchrunJob
    from harness.spec import ClusterConfig

    code = ("import pickle, sys; from harness.cluster import ClusterConfig, TorchrunJob; "
            "sys.stdout.buffer.write(pickle.dumps(TorchrunJob(['harness.train', 'log/x'], '/somewhere', "
            "ClusterConfig(nodes=2, env=['A=1']), 3, run_dir='log/x')))")
    pickled = subprocess.run([sys.executable, "-c", code], cwd=previous_release, capture_output=True, check=True).stdout
    assert b"harness.cluster" in pickled
    job = pickle.loads(pickled)
    assert isinstance(job, TorchrunJob) and isinstance(job.cluster, ClusterConfig)
    assert job.command(2, "n1", "7")[-3:] == ["-m", "harness.train", "log/x"] and job.cluster.env == ["A=1"]
