"""Cluster resources of a run, what every node of a job runs, and what a job does when its step ends.

Used by `harness.submit` (submitit) and by `sbatch/train.sh`. Imports no Slurm library, so the
trainer and the spec can import it anywhere.

    python -m harness.cluster after-step RUN_DIR   # in a job: requeue it if its run asks; print the outcome
                                                   # (what it does goes to stderr, the job log)
"""

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness.run_dir import RunDir


@dataclass
class ClusterConfig:
    """Slurm resources: one task per node, each running torchrun with one process per GPU."""

    nodes: int = 1  # nodes in the job; one torchrun per node
    gpus_per_node: int = 8  # GPUs requested per node (0 on CPU-only partitions)
    procs_per_node: int = 0  # training processes per node (0: one per GPU, or 1 without GPUs)
    cpus_per_task: int = 0  # CPU cores per node task (0: the partition's default)
    mem_gb: int = 0  # memory per node in GB (0: the partition's default)
    time_min: int = 24 * 60  # time limit per job run in minutes; the run requeues itself when it is hit
    partition: str = ""  # Slurm partition (empty: the cluster's default)
    account: str = ""  # Slurm account to charge
    qos: str = ""  # Slurm quality of service
    constraint: str = ""  # Slurm node feature constraint, e.g. "h100"
    exclusive: bool = False  # ask for whole nodes
    sbatch_extra: list[str] = field(default_factory=list)  # more sbatch options as key=value, e.g. reservation=x
    signal_lead_s: int = 120  # the preemption/time-limit signal comes this long before the kill: a step plus a save
    requeue: bool = True  # Slurm may put the job back in the queue (preemption, node failure), and so may the job
    max_timeouts: int = 100  # requeues after hitting the time limit before giving up (preemptions are free)
    setup: list[str] = field(default_factory=list)  # shell lines each node runs before torchrun ("module load x")
    env: list[str] = field(default_factory=list)  # NAME=value set on each node, e.g. NCCL_IB_DISABLE=1
    preflight: bool = True  # check every node at every start of a job; a bad one is excluded and the job requeued
    # A host below this fraction of the other hosts' median on a preflight figure is bad. Healthy identical
    # devices agree within 10 to 20 per cent; a throttled or shared GPU or a busy node loses far more.
    preflight_fraction: float = 0.5
    preflight_min_tflops: float = 0.0  # a host below this matmul TFLOP/s is bad (0: no floor)
    preflight_min_memory_gbps: float = 0.0  # a host below this memory bandwidth (GB/s) is bad (0: no floor)
    preflight_min_read_mbps: float = 0.0  # a host reading the shards slower than this (MB/s) is bad (0: no floor)
    preflight_min_busbw_gbps: float = 0.0  # all-reduce bus bandwidth below this (GB/s) is warned about (0: none)
    straggler_ratio: float = 0.0  # move off a host whose compute time stays above this x the others' (0: off)
    straggler_steps: int = 5  # ... for this many log steps in a row

    def check(self) -> list[str]:
        """Problems with these settings, each naming its field."""
        positive = [f"{n}: must be positive, got {getattr(self, n)}" for n in ("nodes", "time_min", "max_timeouts")
                    if getattr(self, n) <= 0]
        nonnegative = [f"{n}: must be >= 0, got {getattr(self, n)}"
                       for n in ("gpus_per_node", "procs_per_node", "cpus_per_task", "mem_gb", "signal_lead_s")
                       if getattr(self, n) < 0]
        lead = [] if self.signal_lead_s < self.time_min * 60 else [
            f"signal_lead_s: {self.signal_lead_s}s is not shorter than cluster.time_min={self.time_min}min"]
        extra = [f"sbatch_extra: {opt!r} is not key=value" for opt in self.sbatch_extra
                 if not ("=" in opt or opt.isidentifier())]
        env = [f"env: {kv!r} is not NAME=value" for kv in self.env
               if "=" not in kv or not kv.split("=", 1)[0].isidentifier()]
        health = [msg for bad, msg in [
            (not 0 < self.preflight_fraction <= 1,
             f"preflight_fraction: must be in (0, 1], got {self.preflight_fraction}"),
            (self.straggler_ratio != 0 and self.straggler_ratio <= 1,
             f"straggler_ratio: must be above 1 (or 0: off), got {self.straggler_ratio}"),
            (self.straggler_steps < 1, f"straggler_steps: must be positive, got {self.straggler_steps}"),
        ] if bad]
        floors = [f"{n}: must be >= 0, got {getattr(self, n)}" for n in
                  ("preflight_min_tflops", "preflight_min_memory_gbps", "preflight_min_read_mbps",
                   "preflight_min_busbw_gbps") if getattr(self, n) < 0]
        return positive + nonnegative + lead + extra + env + health + floors

    @property
    def nproc_per_node(self) -> int:
        return self.procs_per_node or self.gpus_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.nproc_per_node


# torchrun shares its rendezvous store with the workers by default but keeps no per-attempt keys in
# it (torch 2.13), so a worker group restarted after a failure can read the previous attempt's
# addresses and hang in init_process_group. With this set, each rendezvous round's rank-0 worker
# hosts a fresh store on a fresh port instead. Every launcher here sets it.
TORCHRUN_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def rendezvous_port(job_id: str) -> int:
    """A port for torchrun's c10d store derived from the job id: jobs sharing a node do not collide."""
    return 20000 + zlib.crc32(str(job_id).encode()) % 20000


def torchrun_command(nproc_per_node: int, max_restarts: int, module_args: list[str], nnodes: int = 1,
                     head_node: str | None = None, job_id: str | None = None) -> list[str]:
    """The command each node runs: torchrun over a harness module. With a head node, the c10d
    rendezvous lives there (a multi-node job); without one, a single node (`--standalone`)."""
    where = ["--standalone"] if head_node is None else [
        f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={head_node}:{rendezvous_port(job_id)}",
        f"--rdzv-id={job_id}"]
    return [
        sys.executable, "-m", "torch.distributed.run", *where,
        f"--nproc-per-node={nproc_per_node}",
        # A crashed or killed worker restarts the whole group from the last checkpoint, this many times.
        f"--max-restarts={max_restarts}",
        "-m", *module_args,
    ]


def node_script(cluster: ClusterConfig, command: list[str]) -> str:
    """The shell script each node task runs: the spec's set-up lines, its environment, then `command`
    in the shell's place (exec: signals reach it, and its exit status is the task's)."""
    lines = [*cluster.setup]
    lines += [f"export {kv.split('=', 1)[0]}={shlex.quote(kv.split('=', 1)[1])}" for kv in cluster.env]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in TORCHRUN_ENV.items()]
    return "\n".join([*lines, "exec " + shlex.join(command)])


def head_node() -> str:
    """The first node of this Slurm allocation, where the rendezvous store lives."""
    out = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True,
                         text=True, check=True)
    return out.stdout.split()[0]


# ----------------------------------------------------------------------------- when a job's step ends


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


def requeue_excluding(job_id: str, hosts: list[str], log_dir: Path) -> str:
    """Put the running job `job_id` back in the queue with `hosts` added to its excluded nodes.

    Slurm keeps ExcNodeList across requeues but lets it change only while a job is pending, and this
    one is running. So a helper job (one CPU, a minute) is submitted first: it retries the update
    every second until the job is back in the queue. A requeued job waits Slurm's cred_expire
    (120 s by default) before it may start again, so the helper, queued earlier, is scheduled first;
    if it is late, the job's next start finds itself on the node again and comes back here (after a
    few such starts the trainer gives up, saying how to set the exclusion by hand). Returns how the
    requeue went, if this process outlives it."""
    job = job_fields(job_id)
    exclude = sorted(set(hostnames(job.get("ExcNodeList", ""))) | set(hosts))
    partition = job.get("Partition", "")
    nodes = subprocess.run(["sinfo", "-h", "-N", "-p", partition, "-o", "%N"], capture_output=True, text=True,
                           check=True).stdout.split()
    left = sorted(set(nodes) - set(exclude))
    if len(left) < int(job["NumNodes"]):
        raise RuntimeError(f"excluding {', '.join(exclude)} would leave {len(left)} node(s) of partition {partition} "
                           f"for a {job['NumNodes']}-node job; not requeued: repair or drain the bad node(s), or ask "
                           "for fewer nodes")
    excluded = ",".join(exclude)
    retry = (f"for i in $(seq 600); do scontrol update JobId={job_id} ExcNodeList={excluded} 2>/dev/null && exit 0; "
             "sleep 1; done; exit 1")
    helper = ["sbatch", "--parsable", f"--job-name=exclude-{job_id}", f"--partition={partition}", "--nodes=1",
              "--ntasks=1", "--cpus-per-task=1", "--time=15", f"--output={log_dir}/exclude-{job_id}-%j.out"]
    if job.get("Account") and job["Account"] != "(null)":
        helper.append(f"--account={job['Account']}")
    log_dir.mkdir(parents=True, exist_ok=True)  # sbatch cannot start a job whose log has nowhere to go
    submitted = subprocess.run([*helper, "--wrap", retry], capture_output=True, text=True)
    if submitted.returncode != 0:
        print(f"[harness] could not submit the helper that excludes {excluded} ({submitted.stderr.strip()}); while "
              f"the job is pending, run: scontrol update JobId={job_id} ExcNodeList={excluded}", file=sys.stderr,
              flush=True)
    # Said before it is done: the requeue ends this job's processes, this one among them.
    print(f"[harness] requeueing job {job_id} excluding {excluded} (helper job "
          f"{submitted.stdout.strip() or 'not submitted'})", file=sys.stderr, flush=True)
    requeued = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    return f"requeue: {requeued.stderr.strip() or 'done'}"


def after_step(run: RunDir, job_id: str | None) -> str:
    """What a job does when its training step has ended, decided from the run's own log: back in the
    queue if the workers stopped at a checkpoint on a signal that no requeue follows (SIGTERM from
    `scancel --signal=TERM`, say: if Slurm is already requeuing or ending the job, scontrol refuses
    and nothing changes), or if they moved off bad nodes (then without those nodes). Returns the
    run's state."""
    outcome = run.state()
    if job_id:  # the allocation's end, as near as the job itself can tell: for the run's goodput ledger
        run.record_job(event="step_end", job_id=job_id, outcome=outcome)
    if job_id and outcome == "preempted":
        print(f"[harness] run stopped at a checkpoint: requeueing job {job_id}", file=sys.stderr, flush=True)
        done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
        print(f"[harness] requeue: {done.stderr.strip() or 'done'}", file=sys.stderr, flush=True)
    elif job_id and outcome == "excluded":
        print(f"[harness] {requeue_excluding(job_id, run.excluded_hosts(), run.slurm)}", file=sys.stderr, flush=True)
    return outcome


class TorchrunJob:
    """What each node's Slurm task runs: the spec's set-up lines, then torchrun over a harness module
    (the trainer on a run directory, which resumes by itself, an evaluation, or the preflight)."""

    def __init__(self, module_args: list[str], cwd: str, cluster: ClusterConfig, max_restarts: int,
                 run_dir: str | None = None):
        self.module_args, self.cwd, self.run_dir = module_args, cwd, run_dir
        self.cluster, self.max_restarts = cluster, max_restarts
        self._proc: subprocess.Popen | None = None
        self._done = threading.Event()

    def __getstate__(self) -> dict:  # pickled by submitit at submission and again on requeue
        return {k: v for k, v in self.__dict__.items() if k not in ("_proc", "_done")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _proc=None, _done=threading.Event())

    def command(self, nnodes: int, head: str, job_id: str) -> list[str]:
        return torchrun_command(self.cluster.nproc_per_node, self.max_restarts, self.module_args, nnodes, head, job_id)

    def __call__(self) -> str:
        import submitit

        env = submitit.JobEnvironment()
        # SLURM_JOB_ID is unique per array task (env.job_id reads "123_4" there).
        cmd = self.command(env.num_nodes, env.hostnames[0], os.environ.get("SLURM_JOB_ID", env.job_id))
        print(f"[harness] node {env.node}/{env.num_nodes} ({env.hostname}): {shlex.join(cmd)}", flush=True)
        # torchrun's agent must survive USR2 (its default action is to die) and leave the signal to
        # the workers, which Slurm signals directly; an ignored signal stays ignored across exec,
        # and the trainer installs its own handler.
        self._proc = subprocess.Popen(["bash", "-c", node_script(self.cluster, cmd)], cwd=self.cwd,
                                      preexec_fn=lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN))
        threading.Thread(target=lambda: (self._proc.wait(), self._done.set()), daemon=True).start()
        while not self._done.wait(timeout=1.0):  # a short wait keeps the main thread responsive to signals
            pass
        run = RunDir(Path(self.cwd) / self.run_dir) if self.run_dir else None
        outcome = run.state() if run else None
        # A signal that reaches torchrun's agent too (SIGTERM) makes it exit non-zero even when the
        # workers saved and stopped cleanly: the run's own log says what happened.
        if self._proc.returncode != 0 and outcome not in ("preempted", "excluded"):
            where = f"; the run's error records are in {run.errors}" if run else ""
            raise RuntimeError(f"torchrun exited with code {self._proc.returncode} on {env.hostname}; "
                               f"the failing rank's error is above{where}")
        if run and env.global_rank == 0:
            outcome = after_step(run, os.environ.get("SLURM_JOB_ID"))
        return outcome or "done"

    def checkpoint(self) -> "object":
        """Called by submitit on task 0 when USR2 arrives: the workers got the signal too and are
        saving; wait for them, then let submitit requeue this same job."""
        import submitit

        if self._proc is not None and not self._done.wait(timeout=max(10, self.cluster.signal_lead_s - 15)):
            print("[harness] workers did not finish saving in time; the last periodic checkpoint will be used",
                  flush=True)
        if self.run_dir:  # submitit requeues the job and exits; this allocation ends here (the goodput ledger)
            RunDir(Path(self.cwd) / self.run_dir).record_job(event="step_end", job_id=os.environ.get("SLURM_JOB_ID"))
        return submitit.helpers.DelayedSubmission(self)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m harness.cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["after-step"])
    p.add_argument("run_dir")
    args = p.parse_args(argv)
    print(after_step(RunDir(args.run_dir), os.environ.get("SLURM_JOB_ID")))


if __name__ == "__main__":
    main()
