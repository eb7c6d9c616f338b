"""A large sweep made from a real run's rows, to benchmark (and test) what reads many runs: harness.status,
analysis.plots, analysis.report. Imports no torch.

Each synthetic run repeats the rows of one real run (its start, ready, train, val, checkpoint, sample and
stop rows, every field as the trainer wrote it) stretched to `steps` train rows, with a val row every
`val_every` steps and a checkpoint every CHECKPOINT_EVERY: the loss follows the real run's curve,
shifted by the run's learning rate (the middle one is best) and its seed, with noise per row. A sweep is
`lrs` x `seeds` runs as harness.submit leaves them (config.json, a job record each, summary.json at each
stop), and some do not simply finish, as in a real sweep (with the default `every`=50):

    index 5, 15, 25, ...    preempted after a checkpoint and resumed from it: some steps logged twice
    index 49, 99, ...       failed at 60% of its steps, with an error record
    index 24, 74, ...       still running at 80% (its last row written now)
"""

import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from harness import records
from harness.atomic import write_text
from harness.run_dir import RunDir
from harness.spec import read_spec, resolve, to_json

CHECKPOINT_EVERY = 1000  # steps between checkpoint rows (a fifth of the run, in a shorter one)
ERROR = "RuntimeError: CUDA error: an illegal memory access was encountered"


@dataclasses.dataclass
class Life:
    """One start of a synthetic run: the steps it trains and how it stops (None: still running)."""

    restart: int
    first: int
    last: int
    stop: str | None


def lives(index: int, steps: int, every: int = 50) -> list[Life]:
    """What happens to run `index` of a sweep: of each `every` runs, one fails, one is still running and a
    fifth are preempted and resumed (see the module's doc)."""
    end, stop = steps, "finished"
    if index % every == every - 1:
        end, stop = int(steps * 0.6), "failed"
    elif index % every == every // 2 - 1:
        end, stop = int(steps * 0.8), None
    checkpoint = max(1, min(CHECKPOINT_EVERY, steps // 5))
    if index % max(2, every // 5) == max(2, every // 5) // 2 and end > steps // 2 + checkpoint:
        resumed = steps // 2 // checkpoint * checkpoint  # the checkpoint before the preemption
        preempted = resumed + max(1, checkpoint // 3)
        return [Life(0, 1, preempted, "preempted"), Life(1, resumed + 1, end, stop)]
    return [Life(0, 1, end, stop)]


class Curve:
    """The real run's train loss (smoothed) as a function of the fraction of the run done (on a log scale
    of steps, so that a long run's curve has the short run's shape on a log axis)."""

    def __init__(self, train: list[dict]):
        losses = np.array([r["loss"] for r in train], dtype=float)
        kernel = np.ones(5) / 5
        padded = np.pad(losses, 2, mode="edge")
        self.x = np.linspace(0, 1, len(losses))
        self.y = np.convolve(padded, kernel, mode="valid")

    def __call__(self, fraction: float) -> float:
        return float(np.interp(fraction, self.x, self.y))


def run_rows(source: list[dict], lives_: list[Life], steps: int, val_every: int, shift: float,
             rng: np.random.Generator) -> Iterator[dict]:
    """The rows of one synthetic run, times from 0 (the caller moves them)."""
    kinds = {k: [r for r in source if r["kind"] == k] for k in records.KINDS}
    timed = [r for r in kinds["train"] if r.get("step_time")]
    curve, t = Curve(kinds["train"]), 0.0
    checkpoint = max(1, min(CHECKPOINT_EVERY, steps // 5))
    batch = kinds["start"][0]["batch_tokens"]
    for life in lives_:
        fields = {"restart": life.restart}
        resumed = life.first - 1
        yield kinds["start"][0] | {"step": resumed, "total_steps": steps, "allocated_at": t,
                                   "checkpoint": f"checkpoints/step_{resumed:08d}" if resumed else None} | fields \
            | {"time": t + 9.0}
        t += 9.0
        if resumed == 0:
            t += kinds["val"][0]["seconds"]
            yield kinds["val"][0] | {"loss": curve(0.0)} | fields | {"time": t}
        for step in range(life.first, life.last + 1):
            template = timed[step % len(timed)]
            t += template["seconds"]
            done = math.log1p(step) / math.log1p(steps)
            loss = curve(done) + shift * done + rng.normal(0, 0.03)
            if step == life.first:
                yield {"kind": "ready", "step": step} | fields | {"time": t}
            yield template | {"step": step, "tokens": step * batch, "loss": loss} | fields | {"time": t}
            if step % val_every == 0:
                t += kinds["val"][0]["seconds"]
                yield kinds["val"][0] | {"step": step, "tokens": step * batch, "loss": curve(done) + shift * done} \
                    | fields | {"time": t}
            if step % checkpoint == 0:
                t += kinds["checkpoint"][0]["seconds"]
                yield kinds["checkpoint"][0] | {"step": step, "path": f"checkpoints/step_{step:08d}"} | fields \
                    | {"time": t}
        if life.stop == "finished" and kinds["sample"]:
            yield kinds["sample"][-1] | {"step": life.last} | fields | {"time": t}
        if life.stop:
            yield stop_row(life) | fields | {"time": t + 1.0}
            t += 60.0  # back in the queue


def stop_row(life: Life) -> dict:
    row = {"kind": "stop", "step": life.last, "reason": life.stop}
    if life.stop == "preempted":
        row["signal"] = "SIGUSR2"
    elif life.stop == "failed":
        row["error"] = ERROR
    return row


def shifts(lrs: list[float], seeds: int, rng: np.random.Generator) -> list[float]:
    """Each run's loss shift at the end: worse away from the middle learning rate, plus the seed's."""
    best = math.log10(lrs[len(lrs) // 2])
    return [0.4 * (math.log10(lr) - best) ** 2 + rng.normal(0, 0.02) for lr in lrs for _ in range(seeds)]


def write_run(run: RunDir, rows: list[dict], index: int, now: float, running: bool) -> None:
    """The run's files, its rows' times moved so that it ended an hour ago (or, running, now)."""
    offset = now - rows[-1]["time"] - (0 if running else 3600)
    for r in rows:
        r["time"] = round(r["time"] + offset, 3)
        if r["kind"] == "start":
            r["allocated_at"] = round(r["allocated_at"] + offset, 3)
    job_id = f"7000_{index}"
    jobs = [{"time": rows[0]["allocated_at"] - 30, "job_id": job_id, "via": "submitit",
             "log": str(run.slurm / f"{job_id}_0_log.out"), "nodes": 1, "gpus_per_node": 0}]
    jobs += [{"time": r["time"] + 2, "event": "step_end", "job_id": job_id, "outcome": r["reason"]}
             for r in rows if r["kind"] == "stop"]
    write_text(run.jobs, "".join(json.dumps(j) + "\n" for j in jobs))
    write_text(run.metrics, "".join(json.dumps(r) + "\n" for r in rows))
    stop = next((r for r in reversed(rows) if r["kind"] == "stop"), None)
    if stop is not None and stop["reason"] == "failed":
        run.record_error(rank=0, host=rows[0]["hosts"][0], step=stop["step"], error=ERROR, traceback="")
    if stop is not None:  # the trainer writes the summary at every stop
        summary = records.summarize(rows, jobs, now=stop["time"])
        write_text(run.summary, json.dumps(summary.to_dict(), indent=1) + "\n")


def make_sweep(source: Path, out: Path, lrs: list[float], seeds: int, steps: int, val_every: int, every: int = 50,
               seed: int = 0) -> list[RunDir]:
    """`lrs` x `seeds` synthetic runs under `out`, made from the rows of the real run `source`; of each
    `every` runs, one fails, one is still running, a fifth are preempted and resumed (`lives`)."""
    spec, rows = read_spec(RunDir(source)), records.read(RunDir(source))
    for kind in ("start", "val", "checkpoint"):
        if not any(r["kind"] == kind for r in rows):
            raise ValueError(f"{source}: no {kind} rows to make a sweep from")
    if not any(r["kind"] == "train" and r.get("step_time") for r in rows):
        raise ValueError(f"{source}: no timed train rows to make a sweep from")
    rng = np.random.default_rng(seed)
    runs, now = [], time.time()
    for index, shift in enumerate(shifts(lrs, seeds, rng)):
        lr, run_seed = lrs[index // seeds], index % seeds + 1
        name = f"sweep-lr{lr:g}-seed{run_seed}"
        run = RunDir(out / name)
        run.path.mkdir(parents=True, exist_ok=True)
        exp = dataclasses.replace(spec, name=name, run_dir=str(run.path), seed=run_seed,
                                  optim=dataclasses.replace(spec.optim, lr=lr, scaled_lr=None, scaled_min_lr=None),
                                  schedule=dataclasses.replace(spec.schedule, steps=steps))
        write_text(run.config, to_json(resolve(exp)))
        plan = lives(index, steps, every)
        synthetic = list(run_rows(rows, plan, steps, val_every, shift, rng))
        write_run(run, synthetic, index, now, running=plan[-1].stop is None)
        runs.append(run)
    return runs


def sweep_size(runs: list[RunDir]) -> tuple[int, int]:
    """(train rows, bytes of metrics.jsonl) over `runs`."""
    rows = sum(run.metrics.read_bytes().count(b'{"kind": "train"') for run in runs)
    return rows, sum(run.metrics.stat().st_size for run in runs)



# `python -m MODULE ARGS` that writes its peak resident set (VmHWM, which exec resets) to the file named by
# HARNESS_PEAK_FILE as it exits. The kernel's maxrss (wait4, /usr/bin/time) would not do from here: a child
# spawned by a process that has imported torch starts from that process's memory, which exec keeps in it.
PEAK = """import runpy, sys, os
module, sys.argv = sys.argv[1], sys.argv[1:]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    open(os.environ["HARNESS_PEAK_FILE"], "w").write(peak)
"""


def timed(module: str, *args: str, cwd: Path | None = None) -> dict:
    """Wall seconds and peak resident set (MB) of `python -m MODULE ARGS` run from `cwd`, with its stdout;
    raises with its stderr when it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        peak, out, err = (Path(tmp) / name for name in ("peak", "out", "err"))
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", PEAK, module, *args], cwd=cwd, stdout=stdout, stderr=stderr,
                                  env=os.environ | {"HARNESS_PEAK_FILE": str(peak)})
            seconds = time.perf_counter() - t0
        if done.returncode:
            raise RuntimeError(f"python -m {module} {shlex.join(args)} failed ({done.returncode}):\n"
                               f"{err.read_text()[-3000:]}")
        return {"seconds": seconds, "peak_mb": int(peak.read_text()) / 1024, "stdout": out.read_text()}


# ----------------------------------------------------------------------------- the benchmark

# The real run the sweep is made from: the tiny GPT of the tests on the Shakespeare data, 40 steps of 512
# tokens (a train row each), val every 10 steps, a checkpoint at 20 and 40, a sample at the end.
SOURCE_ARGS = ["--name", "tiny", "--model.n_layer", "2", "--model.n_head", "2", "--model.n_embd", "64",
               "--train.micro_batch", "8", "--train.seq_len", "64", "--train.batch_tokens", "512",
               "--schedule.steps", "40", "--schedule.warmup", "3", "--checkpoint.every", "20",
               "--eval.val_every", "10", "--eval.val_tokens", "4096", "--eval.sample_every", "40",
               "--eval.sample_tokens", "16", "--log.wandb", "disabled"]


def source_run(out: Path, data: Callable[[], str]) -> Path:
    """The real run to copy rows from: trained here (about a minute on one core, on the data dir `data()`
    gives) unless it exists."""
    run = out / "source"
    if not RunDir(run).summary.exists():
        subprocess.run([sys.executable, "-m", "harness.train", "experiments/shakespeare.py", "--run_dir", str(run),
                        "--data.dir", data(), *SOURCE_ARGS], check=True, env=os.environ | {"OMP_NUM_THREADS": "1"},
                       stdout=subprocess.DEVNULL)
    return run


def measure(sweep: Path, out: Path, code: Path, looks: tuple[str, ...] = ("first", "second")) -> dict:
    """status, plots and report on `sweep`, each run once per look (the first with no cache beside any run's
    metrics; a checkout that has none needs one look): wall seconds and peak resident set of each, with
    `code` (a checkout of the harness) as the working directory, and the load average of the machine
    before each."""
    figures: dict = {}
    commands = {"status": ["harness.status", str(sweep)],
                "plots": ["analysis.plots", str(sweep), "--out", str(out / "plots")],
                "report": ["analysis.report", str(sweep), "--out", str(out / "report.html")]}
    for name, command in commands.items():
        for cache in RunDir(sweep).path.glob("*/metrics.arrow"):
            cache.unlink()
        for look in looks:
            load = os.getloadavg()[0]
            done = timed(*command, cwd=code)
            figures[f"{name}_{look}"] = {"seconds": round(done["seconds"], 2), "peak_mb": round(done["peak_mb"]),
                                         "load": round(load, 2)}
    figures["report_mb"] = round((out / "report.html").stat().st_size / 1e6, 2)
    return figures
