"""Cluster resources of a run, and the torchrun command that every node of a job runs.

Used by `harness.submit` (submitit) and mirrored by `sbatch/train.sh`. Imports no Slurm library, so
the trainer and the spec can import it anywhere.
"""

import os
import subprocess
import sys
import zlib
from dataclasses import dataclass, field


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
    max_timeouts: int = 100  # requeues after hitting the time limit before giving up (preemptions are free)

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
        return positive + nonnegative + lead + extra

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


def head_node() -> str:
    """The first node of this Slurm allocation, where the rendezvous store lives."""
    out = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True,
                         text=True, check=True)
    return out.stdout.split()[0]
