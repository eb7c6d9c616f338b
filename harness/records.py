"""Every row a run writes to metrics.jsonl, in one place: the kinds and their fields, the schema version,
reading rows of any version, how a run stands, and the run summary derived from its rows.

Every row is one JSON object: `kind`, the fields of its kind, then `restart` (which start of the run
wrote it) and `time` (epoch seconds). A `start` row carries the schema version of the rows after it,
until the next start: a resumed run may mix versions, and `read` brings every row to the current one.

    version 1  (before this module)  HellaSwag scores were rows of kind "hellaswag"
    version 2                        every benchmark is an `eval` row naming its task

The summary (`summarize`) is the one account of a run that the trainer (summary.json, at every stop),
harness.status and analysis all show; a command that adds rows later rewrites it (`refresh_summary`).
This module imports neither torch nor the spec.
"""

import dataclasses
import functools
import json
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness import ledger
from harness.atomic import write_text
from harness.run_dir import RunDir, read_jsonl, run_state

SCHEMA_VERSION = 2


# ----------------------------------------------------------------------------- the row kinds


@dataclass
class Start:
    """A start of the trainer: a new allocation, or the workers restarted within one."""

    kind = "start"
    step: int  # the step it starts from (0, or the step of the checkpoint it resumed)
    world_size: int
    device: str  # "NVIDIA H100 80GB HBM3", "cpu (2 threads)"
    hosts: list[str]  # every rank's host, in rank order
    job_id: str | None  # the Slurm job, if any
    allocated_at: float  # the allocation's start: Slurm's StartTime, else the process's
    checkpoint: str | None  # the checkpoint it resumed from
    init_from: str | None  # the weights it started from (a fresh run with model.init_from)
    parameters: int  # the model's parameters (the tied embedding once)
    parameters_non_embedding: int  # without the token and position tables
    flops_per_token: float  # training FLOPs per token (6N + attention), for MFU and compute budgets
    total_steps: int  # schedule.steps
    batch_tokens: int  # tokens per optimizer step
    lr_scaling: str
    peak_lr: float
    min_lr: float
    node_env: dict | None = None  # the spec's cluster.env as each host saw it
    checkpoint_plan: dict | None = None  # the time-based save interval and its inputs
    auto_micro_batch: dict | None = None  # what micro_batch="auto" chose, from what
    spec_changes: str | None = None  # fields changed since the last start
    filled: dict | None = None  # spec fields filled in from the run's sources (e.g. model.unpadded_vocab)
    # Seconds from the allocation's start to this row, by phase: launch (Slurm starting the step), torchrun
    # (its agent's import and rendezvous), imports, process_group, build (spec, model, data), restore.
    startup: dict | None = None
    commit: str | None = None  # the git commit of the harness code ("+dirty" with local changes)
    # A branch's first start: {"run", "step", "checkpoint"} of the run it branched from (spec branch_from), and
    # "changes": how this spec differs from that run's.
    branched_from: dict | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass
class Ready:
    """The end of a start's first step: start-up is over, training time is measured from here."""

    kind = "ready"
    step: int


@dataclass
class Train:
    """The training steps since the last train row (`steps` of them, `seconds` of wall time)."""

    kind = "train"
    step: int
    tokens: int  # tokens trained up to this step
    loss: float | None  # the mean loss of this step over all ranks (None: not finite)
    lr: float
    grad_norm: float | None
    seconds: float
    steps: int
    step_time: float | None  # seconds per step (None right after a start: that step was start-up)
    tokens_per_s: float | None
    mfu: float | None  # model FLOPs utilisation (None without a known device peak)
    peak_mem_gb: float
    slowest_host: str | None = None  # the host whose forward passes took longest (several hosts only)
    slowest_ratio: float | None = None  # ... and its ratio to the other hosts' median


@dataclass
class Val:
    """Validation loss on the same fixed `val_tokens` tokens every time."""

    kind = "val"
    step: int
    tokens: int
    loss: float
    val_tokens: int
    seconds: float
    bpb: float | None = None  # bits per byte of the same tokens (<|endoftext|> left out): tokenizer-independent


@dataclass
class Eval:
    """One task of the eval registry scored (harness.eval.registry)."""

    kind = "eval"
    step: int
    tokens: int
    task: str
    examples: int
    acc: float
    acc_norm: float | None
    seconds: float
    later: bool = False  # scored after training had moved on (harness.eval of a kept checkpoint)


@dataclass
class Sample:
    kind = "sample"
    step: int
    text: str
    seconds: float


@dataclass
class Checkpoint:
    """A checkpoint saved; `seconds` is what training waited for it."""

    kind = "checkpoint"
    step: int
    seconds: float
    path: str
    background: bool  # written in the background (checkpoint.async_save)


@dataclass
class Preflight:
    """One host's preflight figures and verdict (harness.cluster.health)."""

    kind = "preflight"
    step: int
    seconds: float
    host: str
    ranks: list[int]
    matmul_tflops: float | None
    memory_gbps: float | None
    read_mbps: float | None
    busbw_gbps: dict[str, float]
    warnings: list[str]
    verdict: Literal["ok", "bad"]
    reasons: list[str]
    job_id: str | None = None


@dataclass
class Stop:
    """How a start ended: finished, preempted (saved on a signal), excluded (moved off bad hosts),
    nonfinite, or failed."""

    kind = "stop"
    step: int
    reason: Literal["finished", "preempted", "excluded", "nonfinite", "failed"]
    signal: str | None = None  # preempted: the signal
    hosts: list[str] | None = None  # excluded: the hosts moved off
    why: str | None = None  # excluded: preflight, straggler, excluded earlier
    failed_step: int | None = None  # nonfinite: the first step that was not finite
    spec_hash: str | None = None  # nonfinite: the spec that diverged (a restart with it is refused)
    error: str | None = None  # failed: the error


Row = Start | Ready | Train | Val | Eval | Sample | Checkpoint | Preflight | Stop
KINDS = {cls.kind: cls for cls in (Start, Ready, Train, Val, Eval, Sample, Checkpoint, Preflight, Stop)}


def as_dict(row: Row, restart: int) -> dict:
    """The JSON object of `row`, as written: kind first, then its fields, the restart and the time. An
    optional field left at None is left out (readers take a missing field as None)."""
    fields = {f.name: getattr(row, f.name) for f in dataclasses.fields(row)
              if not (getattr(row, f.name) is None and f.default is None)}
    return {"kind": row.kind, **fields, "restart": restart, "time": round(time.time(), 3)}


# ----------------------------------------------------------------------------- reading, of any version


def upgrade(rows: list[dict]) -> list[dict]:
    """Rows of any schema version in the current one. The version of a row is its start's (rows before
    the first start, e.g. a standalone preflight's, are read as the current version)."""
    version, out = SCHEMA_VERSION, []
    for row in rows:
        if row["kind"] == "start":
            version = row.get("schema_version", 1)
        if version == 1 and row["kind"] == "hellaswag":  # build-nanogpt-style HellaSwag, the only task then
            row = {k: v for k, v in row.items() if k != "n"} | {"kind": "eval", "task": "hellaswag_nanogpt",
                                                               "examples": row.get("n")}
        out.append(row)
    return out


def read(run: RunDir) -> list[dict]:
    """Every metrics row of `run` (each has a kind), in file order, in the current schema."""
    return upgrade([r for r in read_jsonl(run.metrics) if "kind" in r])


def history(rows: list[dict]) -> tuple[int, dict | None]:
    """What a new start needs from the earlier ones: how many there were, and the last stop row."""
    stops = [r for r in rows if r["kind"] == "stop"]
    return sum(r["kind"] == "start" for r in rows), stops[-1] if stops else None


# ----------------------------------------------------------------------------- how a run stands

def state(run: RunDir, now: float | None = None) -> str:
    """How `run` stands (harness.run_dir.run_state), from its records."""
    return run_state(read(run), now)


# ----------------------------------------------------------------------------- the run summary


def kept(rows: list[dict], kind: str) -> list[dict]:
    """The rows of `kind`, one per step: a step logged again by a later start (which resumed from an
    earlier checkpoint) keeps the later row, the one that led to the final model. Sorted by step."""
    by_step: dict[int, dict] = {}
    for r in rows:
        if r["kind"] == kind:
            by_step[r["step"]] = r
    return [by_step[s] for s in sorted(by_step)]


def latest_evals(rows: list[dict]) -> dict[str, dict]:
    """Per task, its row of the latest step scored (a later evaluation of the same step wins)."""
    out: dict[str, dict] = {}
    for r in rows:
        if r["kind"] == "eval" and r["step"] >= out.get(r["task"], {"step": -1})["step"]:
            out[r["task"]] = r
    return out


def headline(row: dict) -> float:
    """A task's headline figure: acc_norm where the task has one, else acc."""
    return row["acc_norm"] if row.get("acc_norm") is not None else row["acc"]


@dataclass
class Summary:
    """One run, as the trainer, harness.status and analysis all show it (summary.json)."""

    schema_version: int
    state: str
    steps: int  # the last step trained (in the rows kept)
    total_steps: int | None
    tokens: int
    parameters: int | None
    parameters_non_embedding: int | None
    flops_per_token: float | None
    # Training FLOPs up to the last step (flops_per_token x tokens); a branch's count from step 0, as a straight
    # run's would, its source run's share included.
    flops: float | None
    train_loss: float | None  # the last train row's
    val_loss: float | None  # the last val row's
    best_val_loss: float | None
    val_bpb: float | None = None  # the last val row's bits per byte
    evals: dict[str, dict] = field(default_factory=dict)  # task -> {step, examples, acc, acc_norm, headline}
    eval_average: float | None = None  # the unweighted mean of the tasks' headline figures (acc_norm, else acc)
    tokens_per_s: float | None = None  # the median of the last 20 train rows
    mfu: float | None = None  # ... likewise
    restarts: int = 0
    devices: str | None = None  # "2 x cpu (1 threads)"
    hosts: list[str] = field(default_factory=list)  # the latest start's
    wall_hours: float = 0.0  # time in allocations, start-up included, queue excluded
    device_hours: float = 0.0  # wall time x devices, summed over the starts
    goodput: float | None = None  # productive / allocated device time (harness.ledger)
    commits: list[str] = field(default_factory=list)  # the code that ran, once each, in order
    ledger: dict = field(default_factory=dict)
    branched_from: dict | None = None  # a branch: the run, step and checkpoint it started from

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def summarize(rows: list[dict], jobs: list[dict], now: float | None = None) -> Summary:
    """The summary of a run from its rows (current schema) and its job records."""
    starts = [r for r in rows if r["kind"] == "start"]
    first, last = (starts[0], starts[-1]) if starts else ({}, {})
    train, val = kept(rows, "train"), kept(rows, "val")
    evals = {task: {"step": r["step"], "examples": r.get("examples"), "acc": r["acc"], "acc_norm": r.get("acc_norm"),
                    "headline": headline(r)} for task, r in sorted(latest_evals(rows).items())}
    recent = [r for r in train if r.get("tokens_per_s")][-20:]
    mfus = [r["mfu"] for r in recent if r.get("mfu") is not None]
    book = ledger.ledger(rows, jobs)
    return Summary(
        schema_version=SCHEMA_VERSION,
        state=run_state(rows, now),
        steps=max((r["step"] for r in rows if r["kind"] in ("train", "checkpoint")), default=0),
        total_steps=last.get("total_steps"),
        tokens=train[-1]["tokens"] if train else 0,
        parameters=first.get("parameters"),
        parameters_non_embedding=first.get("parameters_non_embedding"),
        flops_per_token=first.get("flops_per_token"),
        flops=first["flops_per_token"] * train[-1]["tokens"] if train and first.get("flops_per_token") else None,
        train_loss=train[-1]["loss"] if train else None,
        val_loss=val[-1]["loss"] if val else None,
        best_val_loss=min(r["loss"] for r in val) if val else None,
        val_bpb=val[-1].get("bpb") if val else None,
        evals=evals,
        eval_average=statistics.fmean(e["headline"] for e in evals.values()) if evals else None,
        tokens_per_s=statistics.median(r["tokens_per_s"] for r in recent) if recent else None,
        mfu=statistics.median(mfus) if mfus else None,
        restarts=max(0, len(starts) - 1),
        devices=f"{last['world_size']} x {last['device']}" if last else None,
        hosts=list(dict.fromkeys(last.get("hosts", []))),
        wall_hours=round(sum(s["wall"] for s in book.starts) / 3600, 6),
        device_hours=book.allocated_device_hours,
        goodput=book.goodput,
        commits=list(dict.fromkeys(s["commit"] for s in starts if s.get("commit"))),
        ledger=book.to_dict(),
        branched_from=next((s["branched_from"] for s in starts if s.get("branched_from")), None),
    )


def refresh_summary(run: RunDir) -> Summary:
    """Derive `run`'s summary from its records and write summary.json (atomically)."""
    summary = summarize(read(run), read_jsonl(run.jobs))
    write_text(run.summary, json.dumps(summary.to_dict(), indent=1) + "\n")
    return summary


# ----------------------------------------------------------------------------- the code that ran


@functools.cache
def code_version() -> str | None:
    """The git commit of the harness code that runs ("+dirty" with uncommitted changes), if it is a git
    checkout: a start row names the code that wrote the rows after it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                "harness"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")
