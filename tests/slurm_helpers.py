"""Helpers for tests that drive the local Slurm cluster (see the slurm_cluster fixture in conftest.py)."""

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from tests.helpers import REPO, harness, rows, tiny

STEPS = 30
SLURM_STATE = Path(os.environ.get("HARNESS_TEST_SLURM_STATE", "/tmp/harness-test-slurm"))
SLURM_NODES = 3  # so that a 2-node job has somewhere else to go
# With accounting (MariaDB + slurmdbd), as every production cluster has it: status, triage and the ledger
# read sacct there, and that is where they broke.
SLURM_ENV = {"LOCAL_SLURM_NODES": str(SLURM_NODES), "LOCAL_SLURM_CPUS_PER_NODE": "2", "LOCAL_SLURM_CRED_EXPIRE": "5",
             "LOCAL_SLURM_ACCOUNTING": "1"}


def slurm_tiny(steps: int = STEPS) -> list[str]:
    """The tiny GPT, checking for stop signals at every step (as the Slurm tests signal it often)."""
    return tiny(steps, "--train.stop_check_every", "1")


TINY = slurm_tiny()
# Two nodes, one CPU process each; the nodes have 2 CPUs, so a job that wants both preempts us.
CLUSTER = ["--cluster.nodes", "2", "--cluster.procs_per_node", "1", "--cluster.gpus_per_node", "0",
           "--cluster.cpus_per_task", "1", "--cluster.time_min", "60", "--cluster.signal_lead_s", "60"]


def run(*cmd: str, check: bool = True, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess:
    """A Slurm command (squeue, sbatch, scontrol, ...)."""
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


def harness_submit(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return harness("harness.submit", *args, check=check, timeout=300)


def queued(job: str) -> bool:
    return bool(run("squeue", "-h", "-j", job, "-o", "%T", check=False).stdout.strip())


def wait_until(what: str, cond, timeout: float = 240, logs: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.25)
    tail = ""
    if logs is not None:
        tail = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(logs.rglob("*.out")))
    raise TimeoutError(f"timed out waiting for {what}\n{tail}")


def preempt_with_high_priority_job() -> None:
    """A job in the `high` partition needing every CPU of every node: Slurm preempts ours."""
    run("sbatch", "-p", "high", "-N", "3", "--ntasks-per-node=1", "--cpus-per-task=2", "-o", "/dev/null",
        "--wrap", "sleep 1")


def worker_rank(pid: int, run_dir: Path) -> int | None:
    """The rank of process `pid` if it is a training process (a torchrun worker) of this run, else None."""
    proc = Path(f"/proc/{pid}")
    try:
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        environ = (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    if b"harness.train" not in cmdline or str(run_dir).encode() not in cmdline:
        return None
    env = dict(kv.split(b"=", 1) for kv in environ if b"=" in kv)
    return int(env[b"RANK"]) if b"TORCHELASTIC_RUN_ID" in env and b"RANK" in env else None


def worker_pid(run_dir: Path, rank: int) -> int:
    """The pid of the training process of `rank` for this run (found through /proc)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and worker_rank(int(proc.name), run_dir) == rank:
            return int(proc.name)
    raise LookupError(f"no rank {rank} worker of {run_dir}")


def progress(run_dir: Path) -> tuple[int, int]:
    """(number of starts, newest step reached since the latest start)."""
    found = rows(run_dir)
    starts = [r for r in found if r["kind"] == "start"]
    if not starts:
        return 0, 0
    latest = starts[-1]["restart"]
    steps = [r["step"] for r in found if r["kind"] == "train" and r["restart"] == latest]
    return len(starts), max(steps, default=starts[-1]["step"])


def job_state(job: str) -> str:
    return run("squeue", "-h", "-j", job, "-o", "%T", check=False).stdout.strip()


# ----------------------------------------------------------------------------- nodes made bad for real


def slurmd_pid(node: str) -> int:
    return int((SLURM_STATE / f"run/slurmd-{node}.pid").read_text())


@contextlib.contextmanager
def slowed(pids: list[int], hogs: int = 5, once: Callable[[], bool] | None = None) -> Iterator[None]:
    """These processes (every thread, and whatever they start from now on) confined to CPU 1, which
    `hogs` busy processes keep busy: a node, or one rank, that is up but slow. With `once`, the hogs
    start when it first holds (polled in the background): the node turns slow at that moment."""
    before = {pid: sorted(os.sched_getaffinity(pid)) for pid in pids}
    for pid in pids:
        run("taskset", "-a", "-p", "-c", "1", str(pid))
    busy, stop = [], threading.Event()

    def start_hogs() -> None:
        while once is not None and not once():
            if stop.wait(0.1):
                return
        # Each in a session of its own: Linux shares a CPU fairly between sessions (autogroups) first,
        # so hogs in one session would take half of it however many they were.
        busy.extend(subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", "while True: pass"],
                                     start_new_session=True) for _ in range(hogs))

    starter = threading.Thread(target=start_hogs, daemon=True)
    starter.start()
    try:
        yield
    finally:
        stop.set()
        starter.join()
        for p in busy:
            p.kill()
            p.wait()
        for pid, cpus in before.items():
            subprocess.run(["taskset", "-a", "-p", "-c", ",".join(map(str, cpus)), str(pid)], capture_output=True)


def training_on(node: str, run_dir: Path) -> bool:
    """Whether a training process (a torchrun worker) of this run on `node` has loaded torch's library:
    it is about a second of imports away from its first collective."""
    for p in node_processes(node):
        with contextlib.suppress(OSError):
            if worker_rank(p.pid, run_dir) is not None and b"libtorch_cpu" in Path(f"/proc/{p.pid}/maps").read_bytes():
                return True
    return False


def node_processes(node: str) -> list[psutil.Process]:
    """Every process running on `node`: its slurmd and all it started, job steps included (slurmstepd
    leaves slurmd's process tree, but not the node's own UTS namespace, where its hostname is set)."""
    uts = os.readlink(f"/proc/{slurmd_pid(node)}/ns/uts")
    if uts == os.readlink("/proc/self/ns/uts"):
        raise RuntimeError(f"{node} shares this host's UTS namespace ('unshare --uts' was refused): its processes "
                           "cannot be told apart from the other nodes'")
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{p.pid}/ns/uts") == uts:
                found.append(p)
    return found


def kill_node(node: str) -> None:
    """The node dies: everything that runs on it is killed at once (a node that lost power takes its
    processes with it), then Slurm is told it is down, as a health check or an admin would."""
    for p in node_processes(node):
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    # Only now: a slurmd still alive could register again and bring the node back (ReturnToService=2).
    run("scontrol", "update", f"NodeName={node}", "State=DOWN", "Reason=harness-test")


def restore_nodes() -> None:
    """Every node back in service: the project's start script restarts a dead slurmd and resumes a
    node that is down."""
    subprocess.run(["bash", str(REPO / "scripts/local_slurm/start.sh"), str(SLURM_STATE)], check=True,
                   env=os.environ | SLURM_ENV, capture_output=True, timeout=300)
