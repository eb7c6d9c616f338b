"""Slurm's state, read in one place: the queue (squeue), accounting (sacct, where it exists), a job's
fields (scontrol), and the allocation this process runs in. Everything else asks here.
"""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

import psutil

from harness.run_dir import RunDir


def head_node() -> str:
    """The first node of this Slurm allocation, where the rendezvous store lives."""
    out = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True,
                         text=True, check=True)
    return out.stdout.split()[0]


def job_fields(job_id: str) -> dict[str, str]:
    """`scontrol show job` as {field: value}."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True)
    return dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)


def slurm_time(value: str) -> float | None:
    """A time as scontrol prints it (2026-11-27T13:49:54, the controller's local time) -> epoch seconds."""
    try:
        return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:  # "Unknown", "None"
        return None


def allocation_started() -> float:
    """When this process's allocation began: Slurm's StartTime for the job it runs in (a requeued
    job's latest start), else when this process started."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id:
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            started = slurm_time(job_fields(job_id).get("StartTime", ""))
            if started:
                return started
    return psutil.Process().create_time()


def hostnames(nodelist: str) -> list[str]:
    """`n[1-3]` -> ["n1", "n2", "n3"] (Slurm's own expansion)."""
    if not nodelist or nodelist == "(null)":
        return []
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()


def queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """job id -> state (PENDING, RUNNING, ...) of the jobs among `job_ids` that squeue lists, in one call;
    a job that left the queue is absent. A job is found under either id Slurm gives it (an array task's 7000_5,
    or its own 7006). None when Slurm cannot be asked (no squeue, or no controller answering): then nothing
    is known of the queue."""
    if not job_ids:
        return {}
    if not shutil.which("squeue"):
        return None
    out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%A %i %T"], capture_output=True,
                         text=True)
    if out.returncode != 0:  # a single id Slurm no longer knows, or no Slurm to ask
        return {} if "Invalid job id" in out.stderr else None
    return _states(out.stdout.splitlines(), job_ids)


def _states(lines: list[str], job_ids: list[str]) -> dict[str, str]:
    """From squeue's lines of "RAW_ID ID STATE": the state of each of `job_ids`, found by either id."""
    found: dict[str, str] = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            found[parts[0]] = found[parts[1]] = parts[2]
    return {job: found[job] for job in job_ids if job in found}


def queue_state(job_id: str) -> str | None:
    """The job's state while squeue lists it (pending, running, ...); None once it left the queue."""
    return (queue_states([job_id]) or {}).get(job_id)


# slurmstepd's line in a job's log when a user cancels the job (scancel): no "DUE TO ..." (preemption, time limit,
# node failure). A signal sent to the steps alone (scancel --signal) logs "STEP ... CANCELLED" instead.
CANCELLED_LINE = re.compile(r"JOB \S+ ON \S+ CANCELLED AT \S+ \*\*\*")


def cancelled(job_id: str, log: str) -> bool:
    """Whether the user cancelled the job: accounting says so (CANCELLED, while the job is still completing),
    or, without accounting, its log (`log`, the job's Slurm output) has slurmstepd's line."""
    found = accounting([job_id])
    if found is not None:
        return bool(found.get(job_id)) and found[job_id][-1].state == "CANCELLED"
    return bool(CANCELLED_LINE.search(log))


@dataclass(frozen=True)
class Accounted:
    """A job as Slurm's accounting (sacct) records it: its state (the first word of sacct's: "CANCELLED by
    0" is CANCELLED), exit codes as "code:signal", and when it ran (each start of a requeued job, with -D)."""

    job_id: str
    state: str  # COMPLETED, FAILED, CANCELLED, OUT_OF_MEMORY, NODE_FAIL, TIMEOUT, PREEMPTED, REQUEUED, RUNNING ...
    exit_code: str  # the batch script's or the task's "code:signal"
    derived_exit_code: str  # the highest exit code of the job's steps
    submit: float | None
    start: float | None
    end: float | None
    nodes: str


SACCT_FIELDS = "JobID,State,ExitCode,DerivedExitCode,Submit,Start,End,NodeList"


def accounting(job_ids: list[str], every_start: bool = False) -> dict[str, list[Accounted]] | None:
    """What Slurm's accounting says of `job_ids`, in one sacct call: job id -> its records (one, or with
    `every_start` one per start of a requeued job, oldest first). None where there is no accounting (no
    sacct, or sacct answering that accounting is disabled)."""
    if not job_ids or not shutil.which("sacct"):
        return None
    # Array tasks that never started are one record, found by the array's id alone (7_[1-2] for -j 7, nothing
    # for -j 7_1): ask for the arrays too, keep only the tasks asked for.
    asked = set(job_ids)
    heads = {job.split("_")[0] for job in asked if "_" in job} - asked
    cmd = ["sacct", "-n", "-X", "-P", "-j", ",".join([*job_ids, *sorted(heads)]), "-o", SACCT_FIELDS]
    cmd += ["-D"] if every_start else []
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return None
    found: dict[str, list[Accounted]] = {}
    for line in out.stdout.splitlines():
        fields = line.split("|")
        if len(fields) != len(SACCT_FIELDS.split(",")):
            continue
        job, state, code, derived, submit, start, end, nodes = fields
        for task in array_tasks(job):
            if task not in asked and task.split("_")[0] in heads:
                continue
            found.setdefault(task, []).append(Accounted(task, state.split()[0] if state else "", code, derived,
                                                        slurm_time(submit), slurm_time(start), slurm_time(end),
                                                        nodes))
    return found


def array_tasks(job: str) -> list[str]:
    """sacct's id of a record -> the job ids it stands for: array tasks that never started share one record,
    `7_[0-2,5%4]` (the %N is the array's throttle); any other id stands for itself."""
    head, bracket, ranges = job.partition("_[")
    if not bracket:
        return [job]
    tasks = []
    for part in ranges.rstrip("]").split("%")[0].split(","):
        first, _, last = part.partition("-")
        tasks += [f"{head}_{i}" for i in range(int(first), int(last or first) + 1)]
    return tasks


def queued_job(run: RunDir) -> str | None:
    """The id of a job of this run that is still pending or running, if any."""
    job = run.last_job()
    return job["job_id"] if job and queue_state(str(job["job_id"])) else None


def node_name() -> str:
    """This node's name as Slurm knows it (what ExcNodeList takes), else its hostname."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()
