"""Slurm's state, read in one place: the queue (squeue), accounting (sacct, where it exists), a job's
fields (scontrol), and the allocation this process runs in. Everything else asks here.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import time

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


def queue_states(job_ids: list[str]) -> dict[str, str]:
    """job id -> state (PENDING, RUNNING, ...) of the jobs among `job_ids` that squeue lists, in one call.
    A job is found under either id Slurm gives it (an array task's 7000_5, or its own 7006)."""
    if not job_ids or not shutil.which("squeue"):
        return {}
    out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%A %i %T"], capture_output=True,
                         text=True)
    if out.returncode != 0:  # e.g. a single id Slurm no longer knows
        return {}
    return _states(out.stdout.splitlines(), job_ids)


def accounting_states(job_ids: list[str]) -> dict[str, str]:
    """job id -> final state (COMPLETED, FAILED, CANCELLED, ...) from sacct, in one call, for the jobs
    among `job_ids` that accounting knows (none where there is no accounting)."""
    if not job_ids or not shutil.which("sacct"):
        return {}
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", ",".join(job_ids), "-o", "JobIDRaw,JobID,State"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    return _states([line.replace("|", " ", 2) for line in out.stdout.splitlines()], job_ids)


def _states(lines: list[str], job_ids: list[str]) -> dict[str, str]:
    """From lines of "RAW_ID ID STATE ...": the first word of the state of each of `job_ids` (the last
    line that names it: sacct lists a requeued job's latest run last)."""
    found: dict[str, str] = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            found[parts[0]] = found[parts[1]] = parts[2]
    return {job: found[job] for job in job_ids if job in found}


def queue_state(job_id: str) -> str | None:
    """The job's state while squeue lists it (pending, running, ...); None once it left the queue."""
    return queue_states([job_id]).get(job_id)


def accounting_state(job_id: str) -> str | None:
    """The job's final state from sacct, once it left the queue (if accounting exists)."""
    return accounting_states([job_id]).get(job_id)


def queued_job(run: RunDir) -> str | None:
    """The id of a job of this run that is still pending or running, if any."""
    job = run.last_job()
    return job["job_id"] if job and queue_state(str(job["job_id"])) else None


def node_name() -> str:
    """This node's name as Slurm knows it (what ExcNodeList takes), else its hostname."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()
