"""Process-group setup and teardown for one process or a torchrun job (gloo on CPU, NCCL on GPU)."""

import ctypes
import datetime
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None  # None when running as a single process without a process group
    cpu_group: object = None  # a gloo group for small CPU-side collectives (flags) that must not sync the GPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def die_with_parent() -> None:
    """torchrun starts each worker in a session of its own, so a killed agent (OOM killer, node
    trouble, a test's SIGKILL) would leave its workers running unsupervised. Linux can deliver
    SIGKILL to a process when its parent dies; ask for that."""
    if sys.platform != "linux":
        return
    parent = os.getppid()
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def no_restart() -> None:
    """Under torchrun, end this node's worker group for good: a failure that no restart can cure (a diverged
    loss, a bad spec or data) would only be replayed, and each of torchrun's --max-restarts would cost a
    start-up to be refused. The agent takes SIGTERM as the end of the job: it stops this node's workers
    and exits non-zero, so the job fails in Slurm's eyes (and an afterok job never runs). Every rank meets
    the same failure and tells its own node's agent."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        os.kill(os.getppid(), signal.SIGTERM)


def setup(device: str = "auto", backend: str = "auto", timeout_min: float = 10.0) -> DistEnv:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, ...), or run alone."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        die_with_parent()
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device='cuda' but torch sees no GPU (CPU-only torch build or no device)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device)
        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", 0))
        if cpus and "OMP_NUM_THREADS" not in os.environ:
            # Slurm gives the node task these cores; without cgroups torch would use every core on the host.
            torch.set_num_threads(max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    if world_size == 1 and "RANK" not in os.environ:
        return DistEnv(0, 0, 1, dev, None)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    # A rank that dies or hangs must bring the others down within `timeout`, not after NCCL's default.
    timeout = datetime.timedelta(minutes=timeout_min)
    kwargs = {"device_id": dev} if dev.type == "cuda" else {}
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun shares its rendezvous store with the workers but keeps no per-attempt keys in it
        # (torch 2.13): a group restarted after a failure reads the dead workers' addresses and hangs
        # in init. Our launchers avoid the shared store (cluster.TORCHRUN_ENV). For a plain torchrun,
        # a prefix per attempt fixes it on one node, where one agent numbers the attempts; across
        # nodes the agents may number them differently, so only a warning is possible.
        if int(os.environ.get("LOCAL_WORLD_SIZE", world_size)) == world_size:
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                                  is_master=False, timeout=timeout)
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            kwargs |= {"store": dist.PrefixStore(f"harness/attempt_{attempt}", store), "rank": rank,
                       "world_size": world_size}
        elif rank == 0 and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", 0)) > 0:
            print("WARNING: multi-node torchrun with --max-restarts: set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, "
                  "or a restart after a failed worker may hang (harness.submit and sbatch/train.sh do)",
                  file=sys.stderr)
    dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    cpu_group = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
    return DistEnv(rank, local_rank, world_size, dev, backend, cpu_group)


def all_reduce_mean(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.AVG if env.backend == "nccl" else dist.ReduceOp.SUM)
        if env.backend != "nccl":  # gloo has no AVG
            t /= env.world_size
    return t


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank if it is true on any rank: the ranks agree before acting on a local event."""
    return any_ranks([flag], env)[0]


def any_ranks(flags: list[bool], env: DistEnv) -> list[bool]:
    """`any_rank` for several flags in one small CPU all-reduce."""
    if not env.distributed:
        return list(flags)
    t = torch.tensor([int(f) for f in flags], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=env.cpu_group)
    return [bool(v) for v in t.tolist()]


def gather(obj: T, env: DistEnv) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not env.distributed:
        return [obj]
    out: list = [None] * env.world_size
    dist.all_gather_object(out, obj, group=env.cpu_group)
    return out


def on_main(fn: Callable[[], T], env: DistEnv) -> T:
    """Run `fn` on rank 0 and give every rank its result; if it raises, every rank raises, so no
    rank is left waiting in a collective for a rank that failed."""
    result, error = None, None
    if env.is_main:
        try:
            result = fn()
        except Exception as e:  # re-raised below, on every rank
            error = e
    if env.distributed:
        box = [result, None if error is None else (type(error).__name__, str(error))]
        dist.broadcast_object_list(box, src=0, group=env.cpu_group)
        result, remote = box
        if remote and error is None:
            raise RuntimeError(f"rank 0 failed: {remote[0]}: {remote[1]}")
    if error is not None:
        raise error
    return result


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier(group=env.cpu_group)


def teardown(env: DistEnv) -> None:
    """Leave the process group. The caller must have dropped its DDP module first: destroying the
    group under a live DDP module crashed ~1 run in 5 on CPU ("terminate called without an active
    exception")."""
    if env.distributed and dist.is_initialized():
        dist.barrier(group=env.cpu_group)
        dist.destroy_process_group()
