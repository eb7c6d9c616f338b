"""Helpers of the tests: the harness as real processes, the one tiny model they train, and reading a
run's log. Fixtures are in conftest.py."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import records
from harness.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"  # the first bytes of every PNG file


# ----------------------------------------------------------------------------- the harness as processes


def tiny(steps: int = 20, *more: str) -> list[str]:
    """Spec overrides for the tiny GPT every process test trains: 2 layers x 64 wide (3.3M parameters,
    nearly all the 50,304 x 64 embedding), 8 x 64 tokens per pass, 1,024 per step (two passes in one
    process, one each on two ranks), a checkpoint every 10 steps, no evaluation or wandb. Later
    arguments (`more`) override earlier ones."""
    return ["--model.n_layer", "2", "--model.n_head", "2", "--model.n_embd", "64",
            "--train.micro_batch", "8", "--train.seq_len", "64", "--train.batch_tokens", "1024",
            "--schedule.steps", str(steps), "--schedule.warmup", "3", "--checkpoint.every", "10",
            "--eval.val_every", "0", "--eval.sample_every", "0", "--log.wandb", "disabled", *more]


def train_args(run_dir: Path, data_dir: Path, *more: str, steps: int = 20) -> list[str]:
    """`harness.train` arguments: the Shakespeare experiment as the tiny GPT, into `run_dir`."""
    return ["experiments/shakespeare.py", "--run_dir", str(run_dir), "--data.dir", str(data_dir), *tiny(steps, *more)]


# A seed sweep (conftest.py: seed_sweep): 3 seeds x 2 learning rates of the tiny GPT, 12 steps of 512 tokens.
SWEEP_LRS, SWEEP_SEEDS, SWEEP_STEPS, SWEEP_BATCH = ("3e-3", "1e-2"), (1, 2, 3), 12, 512
SWEEP_PROMPT = "<i>ROMEO</i> & JULIET:"  # markup in a sample, which a report must show as text


def sweep_args(run_dir: Path, data_dir: Path, lr: str, seed: int) -> list[str]:
    """One run of the seed sweep, named after its directory: val loss at steps 0, 4, 8, 12 on 4,096
    tokens, an 8-token sample at the end, checkpoints at steps 6 and 12."""
    return train_args(run_dir, data_dir, "--name", run_dir.name, "--seed", str(seed), "--optim.lr", lr,
                      "--train.batch_tokens", str(SWEEP_BATCH), "--schedule.warmup", "2", "--checkpoint.every", "6",
                      "--eval.val_every", "4", "--eval.val_tokens", "4096", "--eval.sample_every", str(SWEEP_STEPS),
                      "--eval.sample_tokens", "8", "--eval.sample_prompt", SWEEP_PROMPT, steps=SWEEP_STEPS)


def command(module: str, *args: str, nproc: int = 0, restarts: int = 0) -> list[str]:
    """`python -m MODULE ARGS`, or with nproc, the same under a single-node torchrun."""
    if nproc:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                f"--max-restarts={restarts}", "-m", module, *args]
    return [sys.executable, "-m", module, *args]


def environment(**changes: str) -> dict[str, str]:
    """Our environment, off the network (HuggingFace libraries otherwise retry for ~20 s), changed."""
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1") | changes


def harness(module: str, *args: str, check: bool = True, env: dict[str, str] | None = None, nproc: int = 0,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a harness command to its end from the repository root; with `check`, it must succeed."""
    proc = subprocess.run(command(module, *args, nproc=nproc), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=environment(**(env or {})))
    if check:
        assert proc.returncode == 0, f"{proc.args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def launch(module: str, *args: str, log: Path, nproc: int = 0, restarts: int = 0,
           env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.Popen:
    """Start a harness command in its own process group (so a test can kill all of it), output to `log`;
    from `cwd`, whose harness package (if it has one) is the one Python imports."""
    with open(log, "ab") as out:
        return subprocess.Popen(command(module, *args, nproc=nproc, restarts=restarts), cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=environment(**(env or {})))


def finish(proc: subprocess.Popen, log: Path, timeout: float = 400) -> None:
    """Wait for a launched command, which must succeed."""
    rc = proc.wait(timeout=timeout)
    assert rc == 0, log.read_text()[-3000:]


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        if last_step(run_dir) >= step:
            return
        time.sleep(0.05)
    raise TimeoutError(f"step {step} never came")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a launched command and all its processes at once, as a node failure would."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# ----------------------------------------------------------------------------- a run's log


def rows(run_dir: Path, kind: str | None = None) -> list[dict]:
    return [r for r in records.read(RunDir(run_dir)) if kind is None or r["kind"] == kind]


def last_step(run_dir: Path) -> int:
    return max((r["step"] for r in rows(run_dir, "train")), default=0)


def train_losses(run_dir: Path, restart: int | None = None) -> dict[int, float]:
    """Each step's loss from the latest restart that ran it (a resumed run repeats a few steps), or
    only the steps that `restart` ran."""
    return {r["step"]: r["loss"] for r in rows(run_dir, "train") if restart is None or r["restart"] == restart}
