"""Cluster resources of a run, and the checks and set-up of its nodes."""

from dataclasses import dataclass, field

from harness.spec.section import Section


@dataclass
class ClusterConfig(Section):
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
    container_image: str = ""  # pyxis/enroot: srun --container-image for every node task (empty: no container)
    container_mounts: list[str] = field(default_factory=list)  # ... and --container-mounts, as SRC:DST[:FLAGS]
    array_parallelism: int = 64  # a sweep's job array runs at most this many runs at once (Slurm's array throttle)
    # torch.compile's caches (inductor, autograd, Triton), kept so that a requeued start does not compile again:
    # a directory shared by the nodes (empty: RUN_DIR/compile_cache).
    compile_cache: str = ""

    def check(self) -> list[str]:
        """Problems with these settings, each naming its field."""
        positive = [f"{n}: must be positive, got {getattr(self, n)}"
                    for n in ("nodes", "time_min", "max_timeouts", "array_parallelism") if getattr(self, n) <= 0]
        nonnegative = [f"{n}: must be >= 0, got {getattr(self, n)}"
                       for n in ("gpus_per_node", "procs_per_node", "cpus_per_task", "mem_gb", "signal_lead_s")
                       if getattr(self, n) < 0]
        lead = [] if self.signal_lead_s < self.time_min * 60 else [
            f"signal_lead_s: {self.signal_lead_s}s is not shorter than cluster.time_min={self.time_min}min"]
        extra = [f"sbatch_extra: {opt!r} is not key=value" for opt in self.sbatch_extra
                 if not ("=" in opt or opt.isidentifier())]
        env = [f"env: {kv!r} is not NAME=value" for kv in self.env
               if "=" not in kv or not kv.split("=", 1)[0].isidentifier()]
        env += [f"container_mounts: {m!r} is not SRC:DST[:FLAGS]" for m in self.container_mounts
                if not 2 <= len(m.split(":")) <= 3 or not all(m.split(":")[:2])]
        env += ["container_mounts: set without cluster.container_image"] if self.container_mounts and \
            not self.container_image else []
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

    def srun_container(self) -> list[str]:
        """The srun options that run every node task in the spec's container (pyxis), or none."""
        if not self.container_image:
            return []
        mounts = [f"--container-mounts={','.join(self.container_mounts)}"] if self.container_mounts else []
        return [f"--container-image={self.container_image}", *mounts]
