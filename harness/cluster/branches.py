"""Branches: runs that start from a checkpoint of another run, their trunk (spec `branch_from`), such as the
cooldowns of a constant-rate trunk at several of its checkpoints. Where each starts, whether it is due, and
queueing it. A trunk lists its branches (spec `branches`) and queues each when it writes the checkpoint that
branch starts from; a branch nothing has queued or run yet is named by harness.status and queued by
`harness.submit ... --resume --failed` once its checkpoint exists. Imports no torch.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

from harness.model.sources import CheckpointError, read_meta
from harness.run_dir import RunDir
from harness.spec import Experiment, SpecError, breaking_changes, describe, diff, from_dict

# Variables of the job and of torchrun that the trunk's process holds and a job it queues must not inherit: sbatch
# and srun read SLURM_* from their environment (what submitit's helpers.clean_env drops, except SLURM_CONF, which
# says where the cluster is).
JOB_VARIABLES = ("SLURM_", "SLURMD_", "SBATCH_", "SRUN_", "SUBMITIT_", "TORCHELASTIC_")
TORCHRUN_VARIABLES = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                      "ROLE_RANK", "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}


def branch_point(spec: Experiment) -> tuple[RunDir, int]:
    """The run a branch starts from and the step: branch_from is SOURCE_RUN/checkpoints/step_XXXXXXXX."""
    return RunDir(Path(spec.branch_from).parent.parent), spec.branch_step()


def check_source(exp: Experiment, world_size: int, may_wait: bool = False) -> list[str]:
    """Problems of starting `exp` from its branch_from checkpoint, each naming the field; none once the run has
    checkpoints of its own (they win). With `may_wait` (a submission: the trunk may not be there yet) a
    checkpoint not yet written is no problem."""
    if not exp.branch_from or RunDir(exp.run_dir).newest_checkpoint_step() is not None:
        return []
    path = Path(exp.branch_from)
    if not (path / "meta.json").exists():
        return [] if may_wait else [f"branch_from: {path}: no checkpoint there (not written yet, or removed)"]
    try:
        meta = read_meta(path)
        source = from_dict(meta["spec"], f"{path}/meta.json")
    except (CheckpointError, SpecError, KeyError) as e:
        return [f"branch_from: {e}"]
    changes = breaking_changes({k: v for k, v in diff(source, exp).items() if k != "branch_from"})
    problems = [f"branch_from: {path} was written by a different spec ({describe(changes)}); a branch continues "
                "its source exactly, so they must agree"] if changes else []
    if meta["world_size"] != world_size and not exp.data.reshard:
        problems.append(f"branch_from: {path} was written by {meta['world_size']} ranks, this run has {world_size} "
                        "(set data.reshard=True to continue with the new world size)")
    return problems


def started(run: RunDir) -> bool:
    """Whether anything ever queued or ran `run`: a job recorded in it, or rows written."""
    return run.last_job() is not None or run.metrics.exists()


def pending(run: RunDir, spec: Experiment) -> Literal["due", "waiting"] | None:
    """For a branch that nothing has queued or run yet: "due" when the checkpoint it starts from is written
    (meta.json, written last, vouches for it), "waiting" before that; None for any other run."""
    if not spec.branch_from or started(run):
        return None
    return "due" if (Path(spec.branch_from) / "meta.json").exists() else "waiting"


def explain(run: RunDir, spec: Experiment) -> str | None:
    """What harness.status says of a branch never queued (None for any other run)."""
    state = pending(run, spec)
    if state is None:
        return None
    source, step = branch_point(spec)
    if state == "due":
        return (f"never queued: {source.path} has step {step}; python -m harness.submit {run.path} --resume (or "
                f"--resume --failed) queues it")
    newest = source.newest_checkpoint_step()
    now = "no checkpoint yet" if newest is None else f"its newest checkpoint is step {newest}"
    return (f"never queued: waits for {source.path} to write step {step} ({now}); the trunk queues it then, or "
            "--resume --failed once it has")


def queue(run: RunDir) -> tuple[bool, str]:
    """Queue the branch `run` through `python -m harness.submit RUN_DIR --resume`, in a process of its own and
    with the environment of a login node (less the job's and torchrun's variables). Returns (queued, what
    harness.submit said)."""
    env = {k: v for k, v in os.environ.items()
           if k == "SLURM_CONF" or not (k.startswith(JOB_VARIABLES) or k in TORCHRUN_VARIABLES)}
    proc = subprocess.run([sys.executable, "-m", "harness.submit", str(run.path), "--resume"], env=env,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def check_ladder(specs: list[Experiment]) -> list[str]:
    """Problems between trunks and branches submitted together, each naming the run and field: a branch
    whose trunk is submitted with it must be listed in that trunk's `branches`, and its step kept
    (checkpoint.keep_steps, or the trunk's last step), or nothing would queue it or keep its checkpoint."""
    by_dir = {Path(s.run_dir).resolve(): s for s in specs}
    problems = []
    for spec in specs:
        if not spec.branch_from:
            continue
        source, step = branch_point(spec)
        trunk = by_dir.get(source.path.resolve())
        if trunk is None:
            if not source.exists():
                problems.append(f"{spec.name}: branch_from: {spec.branch_from} is in no run ({source.path} is not a "
                                "run directory, nor a run of this submission)")
            continue
        if Path(spec.run_dir).resolve() not in {Path(b).resolve() for b in trunk.branches}:
            problems.append(f"{trunk.name}: branches: does not list {spec.run_dir}, which branches from its step "
                            f"{step}: nothing would queue it")
        if step not in trunk.checkpoint.keep_steps and step != trunk.schedule.steps:
            problems.append(f"{trunk.name}: checkpoint.keep_steps: {spec.name} branches from step {step}, which is "
                            "not kept (add it)")
    return problems


def require(specs: list[Experiment]) -> None:
    if problems := check_ladder(specs):
        raise SpecError("\n".join(problems))
