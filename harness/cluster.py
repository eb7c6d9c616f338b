"""Cluster resources of a run, and the torchrun command that every node of a job runs.

Used by `harness.submit` (submitit) and mirrored by `sbatch/train.sh`. Imports no Slurm library, so
the trainer and the spec can import it anywhere.
"""

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


def torchrun_command(nproc_per_node: int, nnodes: int, head_node: str, job_id: str, max_restarts: int,
                     module_args: list[str]) -> list[str]:
    """The command each node runs; the c10d rendezvous lives on the first node of the allocation."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc_per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={head_node}:{rendezvous_port(job_id)}",
        f"--rdzv-id={job_id}",
        # A crashed or killed worker restarts the whole group from the last checkpoint, this many times.
        f"--max-restarts={max_restarts}",
        "-m", *module_args,
    ]
