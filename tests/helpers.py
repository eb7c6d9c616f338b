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


# A tiny model ladder (harness.spec.ladder): 2 sizes (1 and 2 layers of 16 wide: N = 3,312 and 6,592) x budgets
# of 0.5 and 1 tokens per parameter, at 256 tokens a step: the trunks run 10 and 21 steps, the branches 6, 13, 13 and
# 26 (decaying over the last 20%). Checkpoints every 2 steps, keeping 2: the branch points at steps 5 and 10 survive
# only by being kept for good. Validation on 256 tokens at the end of each branch.
TINY_LADDER = """
import dataclasses, runpy
from harness.spec import CheckpointConfig, DataConfig, EvalConfig, LogConfig, TrainConfig
from harness.spec.ladder import Ladder

default = runpy.run_path({experiment!r})["spec"]
base = dataclasses.replace(
    default, data=DataConfig(dir={data!r}),
    train=TrainConfig(batch_tokens=256, micro_batch=4, seq_len=64, device="cpu", stop_check_every=1),
    eval=EvalConfig(val_every=0, val_tokens=256, tasks=[], sample_every=0),
    checkpoint=CheckpointConfig(every=2, keep=2), log=LogConfig(every=1, wandb="disabled"))
ladder = Ladder(name="tiny", base=base, shapes={shapes!r}, multiples=[0.5, 1], lr_ref=1e-2, n_ref=6592,
                batch_tokens=lambda n: 256, root={root!r})
sweep = ladder.specs()
"""


def write_tiny_ladder(root: Path, data_dir: Path, shapes: tuple = ((1, 2, 16), (2, 2, 16))) -> Path:
    """The tiny ladder's experiment file in `root`, its runs under root/tiny/."""
    file = root / "tiny_ladder.py"
    file.write_text(TINY_LADDER.format(experiment=str(REPO / "experiments/shakespeare.py"), data=str(data_dir),
                                       shapes=list(shapes), root=str(root)))
    return file


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
