"""The architecture holds: the import contracts in pyproject.toml (layers, no cycles at any depth, no torch
where a login node works), the commands a login node runs import no torch when they run, and the trainer
stays readable (no class over 200 lines, no function over 60)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, environment

LIMITS = {"class": 200, "function": 60}  # lines, harness/ and analysis/


def test_import_contracts_are_kept() -> None:
    """lint-imports (import-linter) with the contracts of pyproject.toml; it counts every import, those
    inside functions and TYPE_CHECKING blocks too."""
    proc = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("command", [
    ["harness.submit", "experiments/fineweb_10b.py", "--dry-run"],
    ["harness.status", "experiments"],  # no runs there: the command's own imports
    ["analysis.plots", "no-such-dir"],
])
def test_login_node_commands_import_no_torch(command: list[str]) -> None:
    """Not a module of torch is imported when the command runs (`python -X importtime` lists every one)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", *command], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=environment())
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "harness" in " ".join(imported) or "analysis" in " ".join(imported), proc.stderr[-2000:]
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")], f"{command} imported torch"


def test_no_class_or_function_is_too_long() -> None:
    too_long = []
    for path in [*REPO.glob("harness/**/*.py"), *REPO.glob("analysis/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            kind = "class" if isinstance(node, ast.ClassDef) else \
                "function" if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else None
            if kind and node.end_lineno - node.lineno + 1 > LIMITS[kind]:
                too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long
