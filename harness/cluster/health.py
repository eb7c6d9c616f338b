"""Healthy nodes only: a preflight check of every node at every start, and stragglers named in training.

Preflight (every start of a job, before the first step; `cluster.preflight`): every rank measures its
device's matmul throughput (bf16 on a GPU, fp32 on a CPU), its memory bandwidth and the read rate of
the run's own shards; all ranks together measure all-reduce bus bandwidth at a few message sizes over
the backend the run trains with (nccl-tests' busbw: bytes / time x 2(n-1)/n). A host is bad when one
of its figures is below an absolute floor in the spec, or when its matmul or memory figure is below
`cluster.preflight_fraction` of the median of the other hosts'. Read rates from a shared filesystem
swing with other tenants' I/O from one second to the next, so they are judged by their floor only (a
broken mount is what it catches). Each measurement is the best of a few short trials, so that a
moment of noise does not condemn a node; a real fault (a throttled or shared device) is lasting.

Stragglers: at each log step the ranks share the time their own forward passes took (no
communication happens in a forward pass, so a rank that waits for others does not look slow); the
train row names the slowest host and its ratio to the median of the others.

    torchrun ... -m harness.cluster.health RUN_DIR   # the preflight alone (python -m harness.submit --preflight)
"""

import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from harness import distributed, records
from harness.cluster.nodes import table, verdicts
from harness.cluster.slurm import node_name
from harness.data.manifest import DataError, load_manifest
from harness.distributed import DistEnv
from harness.run_dir import JsonlAppender, RunDir
from harness.spec import read_spec

TRIALS = 3


def _best_rate(work: float, run: object, device: torch.device, seconds: float = 0.15) -> float:
    """`work` units per second: the best of TRIALS timings of `run()` repeated for ~`seconds` each."""
    run()  # warm-up: kernels chosen, memory allocated
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = 0.0
    for _ in range(TRIALS):
        sync()
        t0, n = time.perf_counter(), 0
        while True:
            run()
            n += 1
            sync()
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
        best = max(best, work * n / elapsed)
    return best


def matmul_tflops(device: torch.device) -> float:
    """Dense matmul throughput: bf16 4096^3 on a GPU, fp32 512^3 on a CPU."""
    n, dtype = (4096, torch.bfloat16) if device.type == "cuda" else (512, torch.float32)
    gen = torch.Generator(device=device).manual_seed(0)  # not the global one: training's streams stay untouched
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    return _best_rate(2 * n**3, lambda: a @ b, device) / 1e12


def memory_gbps(device: torch.device) -> float:
    """Device memory bandwidth: a copy of 1 GiB on a GPU, 64 MiB on a CPU (bytes read + written)."""
    n = (2**30 if device.type == "cuda" else 2**26) // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    return _best_rate(2 * src.numel() * 4, lambda: dst.copy_(src), device) / 1e9


def shard_read_mbps(files: list[Path], rank: int, nbytes: int = 32 * 2**20) -> float | None:
    """How fast this node reads the run's shards: the best of a few reads of `nbytes` from one of them
    (chosen by rank), each with the page cache for that range dropped first, so that the filesystem,
    not memory, is measured."""
    if not files:
        return None
    path = files[rank % len(files)]
    size = path.stat().st_size
    offset = (rank * nbytes) % max(1, size - nbytes) if size > nbytes else 0
    length = min(nbytes, size)
    fd = os.open(path, os.O_RDONLY)
    try:
        best = 0.0
        for _ in range(TRIALS):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
            t0, done = time.perf_counter(), 0
            while done < length:
                chunk = os.pread(fd, min(4 * 2**20, length - done), offset + done)
                if not chunk:
                    break
                done += len(chunk)
            best = max(best, done / (time.perf_counter() - t0) / 1e6)
        return best
    finally:
        os.close(fd)


def allreduce(env: DistEnv, sizes: tuple[int, ...], iters: int = 5) -> dict[int, dict]:
    """Collective: each all-reduce size (bytes of float32) as nccl-tests reports it: seconds per
    all-reduce, algbw = bytes / time and busbw = algbw x 2(n-1)/n in GB/s (busbw is comparable across
    rank counts and to the link's own speed). Empty for a single process."""
    if not env.distributed:
        return {}
    out = {}
    for size in sizes:
        t = torch.ones(size // 4, device=env.device)
        dist.all_reduce(t)  # warm-up: connections and buffers set up
        if env.device.type == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(t)
        if env.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / iters
        algbw = size / seconds / 1e9
        out[size] = {"seconds": seconds, "algbw": algbw, "busbw": algbw * 2 * (env.world_size - 1) / env.world_size}
    return out


# ----------------------------------------------------------------------------- preflight


def preflight(env: DistEnv, shard_files: list[Path]) -> list[dict]:
    """Collective: every rank measures itself, then all measure the all-reduce together. Returns, on
    every rank, one record per rank (host, rank and figures) in rank order."""
    device = env.device
    mine = {"host": node_name(), "rank": env.rank, "matmul_tflops": matmul_tflops(device),
            "memory_gbps": memory_gbps(device), "read_mbps": shard_read_mbps(shard_files, env.rank)}
    sizes = (2**20, 16 * 2**20, 64 * 2**20) if device.type == "cuda" else (2**18, 2**20, 4 * 2**20)
    measured = allreduce(env, sizes)
    records = distributed.gather(mine, env)
    for r in records:
        r["busbw_gbps"] = {str(size): m["busbw"] for size, m in measured.items()}
    return records




# ----------------------------------------------------------------------------- stragglers


# ----------------------------------------------------------------------------- standalone


def main(argv: list[str] | None = None) -> None:
    """The preflight alone, on the allocation this runs in: rows in RUN_DIR's metrics, a table."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: torchrun ... -m harness.cluster.health RUN_DIR")
    run = RunDir(argv[0])
    spec = read_spec(run)
    env = distributed.setup(spec.train.device, spec.train.backend, spec.train.collective_timeout_min)
    try:
        manifest = load_manifest(spec.data.dir)
        files = [Path(spec.data.dir) / e["file"] for e in manifest["splits"]["train"]["shards"]]
    except DataError:
        files = []  # nothing to read: the read check is skipped
    t0 = time.perf_counter()
    rows = verdicts(preflight(env, files), spec.cluster)
    seconds = round(time.perf_counter() - t0, 3)
    if env.is_main:
        out = JsonlAppender(run.metrics)
        for row in rows:
            out.write(records.as_dict(records.Preflight(step=0, job_id=os.environ.get("SLURM_JOB_ID"), seconds=seconds,
                                                        **row), restart=0))
        out.close()
        print(f"preflight ({seconds:.1f} s):\n{table(rows)}", flush=True)
    distributed.teardown(env)


if __name__ == "__main__":
    main()
