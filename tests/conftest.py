"""The tests' fixtures: the real data, a real Slurm cluster, HellaSwag. Their helpers (the harness as
real processes, the tiny model, reading a run's log) are in tests/helpers.py.

Markers: `slurm` (added to every test that uses the cluster) and `slow` (a test or fixture of tens of
seconds). The fast tier for day-to-day work is `python -m pytest -m "not slurm and not slow"`.
"""

import os
import subprocess
from pathlib import Path

import pytest

from harness.data.prepare import prepare
from harness.data.sources import shakespeare
from tests.helpers import REPO, SWEEP_LRS, SWEEP_SEEDS, finish, harness, launch, sweep_args, train_args
from tests.slurm_helpers import SLURM_ENV, SLURM_STATE, TINY


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="session")
def shakespeare_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Shakespeare corpus prepared once: ~1.4M train tokens in 7 shards, ~0.13M val tokens in 1."""
    out = tmp_path_factory.mktemp("data") / "shakespeare"
    prepare(shakespeare(), out, shard_tokens=200_000, workers=2)
    return out


@pytest.fixture(scope="session")
def trained_run(shakespeare_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT trained for 40 steps on Shakespeare (val loss ~7.7, from 10.8), with one checkpoint,
    at the end."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    harness("harness.train", *train_args(run_dir, shakespeare_dir, "--checkpoint.every", "40", steps=40),
            env={"OMP_NUM_THREADS": "1"})
    return run_dir


@pytest.fixture(scope="session")
def seed_sweep(shakespeare_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Path]:
    """The tiny GPT trained for SWEEP_SEEDS x SWEEP_LRS (tests/helpers.py: sweep_args), concurrently with
    one thread each, into one folder: run directories by (lr, seed)."""
    root = tmp_path_factory.mktemp("seeds")
    started = {}
    for lr in SWEEP_LRS:
        for seed in SWEEP_SEEDS:
            run_dir = root / f"tiny-lr{lr}-seed{seed}"
            started[(lr, seed)] = run_dir, launch("harness.train", *sweep_args(run_dir, shakespeare_dir, lr, seed),
                                                  log=run_dir.with_suffix(".log"), env={"OMP_NUM_THREADS": "1"})
    for run_dir, proc in started.values():
        finish(proc, run_dir.with_suffix(".log"))
    return {key: run_dir for key, (run_dir, _) in started.items()}


@pytest.fixture(scope="session")
def play_texts() -> list[str]:
    """The 38 plays as plain text, in the order the Shakespeare source yields them."""
    return list(shakespeare().documents(0))


# ----------------------------------------------------------------------------- slurm

@pytest.fixture(scope="session")
def slurm_cluster() -> Path:
    """A real Slurm cluster on this machine (slurmctld + 3 slurmd nodes, munge), started by the
    project's own script and torn down at the end: 3 nodes, so that a 2-node job has somewhere else
    to go. Partitions: debug (default, preemptable), high (preempts debug), long. Sets SLURM_CONF for
    the tests and the jobs they submit."""
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root")
    env = os.environ | SLURM_ENV
    subprocess.run(["bash", str(REPO / "scripts/local_slurm/start.sh"), str(SLURM_STATE)], env=env, check=True,
                   timeout=600)
    os.environ["SLURM_CONF"] = str(SLURM_STATE / "etc/slurm.conf")
    yield SLURM_STATE
    if os.environ.get("HARNESS_KEEP_SLURM") != "1":
        subprocess.run(["bash", str(REPO / "scripts/local_slurm/stop.sh"), str(SLURM_STATE), "--purge"],
                       timeout=300)


@pytest.fixture(scope="session")
def reference_run(shakespeare_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every Slurm run of the tiny GPT must match bit for bit: slurm_tiny()'s
    steps, 2 ranks of 1 thread each, as in the Slurm jobs (one per node)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    harness("harness.train", *train_args(run_dir, shakespeare_dir, *TINY), nproc=2)
    return run_dir


# ----------------------------------------------------------------------------- hellaswag


@pytest.fixture(scope="session")
def hellaswag() -> Path:
    """The real HellaSwag validation split (10,042 rows) as a datasets.save_to_disk directory."""
    from tests.hellaswag_data import hellaswag_dir

    return hellaswag_dir()


@pytest.fixture(scope="session")
def eval_data() -> Path:
    """The zero-shot suite's data, prepared by `python -m harness.prepare eval` from the cached wheel."""
    from tests.hellaswag_data import eval_dir

    return eval_dir()


@pytest.fixture(scope="session")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """trained_run exported to a HuggingFace directory (harness.export, in this process)."""
    from harness.tools.export import export
    from tests.hellaswag_data import torch_threads

    out = tmp_path_factory.mktemp("export") / "hf"
    with torch_threads():
        export(trained_run, out)
    return out


@pytest.fixture
def one_thread():
    """One torch thread in this process: the scoring comparisons run beside subprocesses on 2 cores."""
    from tests.hellaswag_data import torch_threads

    with torch_threads():
        yield
