"""Evaluation jobs chained to training: what harness.submit asks Slurm for (--dry-run, no Slurm needed), and on
the local Slurm cluster (marked `slurm`): an evaluation after a training job, a backfill array over the kept
checkpoints, and a dependency that can never be met."""

import json
import re
import shutil
from pathlib import Path

import pytest

from harness import records
from harness.run_dir import JsonlAppender, RunDir, step_dir
from tests.helpers import rows
from tests.slurm_helpers import CLUSTER, harness_submit, queued, run, slurm_tiny, wait_until

ONE_NODE = ["--cluster.nodes", "1", *CLUSTER[2:]]


def add_eval_row(run_dir: Path, step: int, task: str) -> None:
    out = JsonlAppender(RunDir(run_dir).metrics)
    out.write(records.as_dict(records.Eval(step=step, tokens=step * 1024, task=task, examples=2, acc=0.5,
                                           acc_norm=None, seconds=0.1, later=True), restart=0))
    out.close()


@pytest.mark.slow  # its own call takes seconds, but it needs the session's trained run
def test_eval_after_a_job_and_every_checkpoint_dry_run(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    # A second kept checkpoint (a copy of the first under another step's name: the plan reads names and records).
    shutil.copytree(step_dir(RunDir(run_dir).checkpoints, 40), step_dir(RunDir(run_dir).checkpoints, 20))
    add_eval_row(run_dir, 20, "copa")
    out = harness_submit("--eval", "suite", str(run_dir), "--every-checkpoint", "--after", "77", "--limit", "5",
                         *ONE_NODE, "--dry-run").stdout
    assert "--dependency=afterok:77" in out and "#SBATCH --kill-on-invalid-dep=yes" in out
    assert "checkpoints on disk at steps 20, 40" in out and "suite still to score at steps 20, 40" in out
    assert "2 evaluation job(s) (one array)" in out
    assert f"harness.eval suite {step_dir(RunDir(run_dir).checkpoints, 20)} --limit 5" in out
    # copa alone is done at step 20: only step 40 is left for it.
    out = harness_submit("--eval", "copa", str(run_dir), "--every-checkpoint", *ONE_NODE, "--dry-run").stdout
    assert "copa still to score at steps 40" in out and "dependency" not in out
    add_eval_row(run_dir, 40, "copa")
    out = harness_submit("--eval", "copa", str(run_dir), "--every-checkpoint", *ONE_NODE, "--dry-run").stdout
    assert "nothing to evaluate" in out


def test_eval_after_training_dry_run(shakespeare_dir, tmp_path):
    out = harness_submit("experiments/shakespeare.py", "--run_dir", str(tmp_path / "run"), "--data.dir",
                         str(shakespeare_dir), "--eval.tasks", "suite", "--eval.tasks_limit", "100", *slurm_tiny(4),
                         *ONE_NODE, "--eval-after", "suite", "--dry-run").stdout
    assert "--dependency=afterok:<training job id>" in out and f"harness.eval suite {tmp_path / 'run'}" in out
    # The in-loop tasks' cost against training, said before anything is queued.
    assert re.search(r"eval.tasks suite every \d+ steps, first 100 examples of each: [\d.]+M forward tokens", out)
    proc = harness_submit("experiments/shakespeare.py", "--after", "3", "--dry-run", check=False)
    assert proc.returncode != 0 and "--after and --every-checkpoint go with --eval" in proc.stderr


def test_fineweb_10b_in_loop_suite_costs_under_3_percent():
    out = harness_submit("experiments/fineweb_10b.py", "--dry-run").stdout
    share = float(re.search(r"about ([\d.]+)% of the training time", out).group(1))
    assert 0 < share <= 3.0, out


# ----------------------------------------------------------------------------- on the local Slurm cluster


def test_evaluation_waits_for_training_and_backfills_checkpoints(slurm_cluster, shakespeare_dir, eval_data, tmp_path):
    run_dir = tmp_path / "run"
    out = harness_submit("experiments/shakespeare.py", "--run_dir", str(run_dir), "--data.dir", str(shakespeare_dir),
                         "--eval.tasks_data", str(eval_data), *slurm_tiny(20), "--checkpoint.keep", "2", *ONE_NODE,
                         "--eval-after", "copa").stdout
    train_job, eval_job = re.findall(r"job (\d+)", out)[:2]
    assert "after job" in out and run("squeue", "-h", "-j", eval_job, "-o", "%E").stdout.strip().startswith("afterok")
    wait_until("training and its evaluation", lambda: not queued(train_job) and not queued(eval_job), timeout=400,
               logs=run_dir)
    evals = [r for r in rows(run_dir, "eval") if r.get("later")]
    assert [(r["task"], r["step"]) for r in evals] == [("copa", 20)]
    # Backfill: keep=2 left steps 10 and 20; 20 is done, so the array has one task, for step 10.
    out = harness_submit("--eval", "copa", str(run_dir), "--every-checkpoint", "--data", str(eval_data),
                         *ONE_NODE).stdout
    assert "checkpoints on disk at steps 10, 20" in out and "copa still to score at steps 10" in out
    (job,) = re.findall(r"job (\d+)", out)
    wait_until("the backfill", lambda: not queued(job), logs=run_dir / "eval-slurm")
    assert sorted(r["step"] for r in rows(run_dir, "eval") if r.get("later")) == [10, 20]
    summary = json.loads(RunDir(run_dir).summary.read_text())
    assert summary["evals"]["copa"]["step"] == 20  # the newest step's figure, whatever was scored last


def test_a_dependency_that_cannot_be_met_leaves_the_queue(slurm_cluster, trained_run, tmp_path):
    failed = run("sbatch", "--parsable", "-o", "/dev/null", "--wrap", "exit 1").stdout.strip()
    wait_until("the failing job", lambda: not queued(failed))
    out = harness_submit("--eval", "copa", str(trained_run), "--after", failed, *ONE_NODE).stdout
    job = re.search(r"job (\d+)", out).group(1)  # "submitted ...: job N (after job M succeeds)"
    wait_until("Slurm to remove the evaluation", lambda: not queued(job), timeout=120)
