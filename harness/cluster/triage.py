"""Why a run did not finish: one class per run, read from its own records, and the next step.

The records, most authoritative first: the run's stop rows (a non-finite loss), the Slurm log of its
last job, latest line first (Slurm's own lines: node failure, time limit, cancellation, OOM kills;
submitit's: timeouts exhausted), the errors its ranks recorded in the latest attempt (the earliest is
the cause, the others its echoes), and
its last stop row (preempted or moved off a bad node, and then not requeued). Nothing is guessed:
what no record explains is "unknown", with the last error line.

A run whose job is still queued or running has not failed; neither has a finished one.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from harness import records
from harness.run_dir import RunDir, read_jsonl


@dataclass(frozen=True)
class Failure:
    kind: str  # one of CLASSES
    evidence: str  # the record the class was read from
    what: str
    next_step: str
    curable: bool  # a resubmission alone can cure it

    def to_dict(self) -> dict:
        return {"class": self.kind, "what": self.what, "next": self.next_step, "curable": self.curable,
                "evidence": self.evidence}


RESUBMIT = "resubmit: python -m harness.submit RUN_DIR --resume (or log/ --resume --failed)"
CLASSES = {  # kind -> (what, next step, curable by a resubmission)
    "oom": ("out of memory", "lower train.micro_batch (or set it to auto), then resubmit", False),
    "hung": ("collective timeout: a rank hung", "find the host of the rank in errors.jsonl, check it with "
             "harness.submit --preflight, then resubmit", False),
    "dead_rank": ("a rank died with no restarts left", RESUBMIT, True),
    "nonfinite": ("non-finite loss", "lower optim.lr or set train.on_nonfinite=skip, then resubmit", False),
    "node_failure": ("node failure", RESUBMIT, True),
    "timeouts": ("time-limit requeues exhausted", RESUBMIT + "; raise cluster.max_timeouts or cluster.time_min",
                 True),
    "preempted": ("preempted, not requeued", RESUBMIT, True),
    "data": ("data error", "fix the data the error names (python -m harness.prepare --verify DIR), then resubmit",
             False),
    "spec": ("spec error", "fix the field the error names, then resubmit", False),
    "cancelled": ("cancelled by the user", "resubmit if that was not meant", False),
    "unknown": ("unknown", "read the error and the job log", False),
}

# Lines of the job's Slurm log (slurmstepd's and submitit's) that say how the job ended.
LOG_RULES = [
    (re.compile(r"DUE TO NODE FAILURE"), "node_failure"),
    (re.compile(r"oom[-_ ]kill|Out Of Memory", re.IGNORECASE), "oom"),
    (re.compile(r"timed-out too many times|DUE TO TIME LIMIT"), "timeouts"),
    # A user's scancel of the job: no "DUE TO ...". A signal sent to the steps alone (scancel --signal)
    # logs "STEP ... CANCELLED" and leaves the job to decide, so only the job's line counts.
    (re.compile(r"JOB \S+ ON \S+ CANCELLED AT \S+ \*\*\*"), "cancelled"),
]
# The first error a rank recorded: its type and message.
ERROR_RULES = [
    (re.compile(r"OutOfMemoryError|out of memory|MemoryError|can't allocate memory|Cannot allocate memory"), "oom"),
    (re.compile(r"^(DataError|ShardError|SourceError)"), "data"),
    (re.compile(r"^SpecError"), "spec"),
    (re.compile(r"timed out|Timeout|timeout", re.IGNORECASE), "hung"),
    (re.compile(r"Connection closed by peer|Connection reset by peer|Broken pipe|peer|NCCL error|gloo",
                re.IGNORECASE), "dead_rank"),
]


def failure(kind: str, evidence: str) -> Failure:
    what, next_step, curable = CLASSES[kind]
    return Failure(kind, evidence, what, next_step, curable)


def job_log(run: RunDir) -> tuple[str, str]:
    """(path, text) of the Slurm log of the run's last job; empty if there is none to read."""
    job = run.last_job() or {}
    path = job.get("log")
    if not path or not Path(path).exists():
        return path or "", ""
    return path, Path(path).read_text(errors="replace")


def classify(run: RunDir, queue_state: str | None, rows: records.Rows | None = None) -> Failure | None:
    """The class of a run that did not finish; None for a finished run or one still in the queue.
    `rows`: the run's metrics rows (harness.records.columns), when the caller has read them already."""
    if queue_state:
        return None
    rows = records.columns(run) if rows is None else rows
    state = rows.state()
    if state in ("finished", "running") or (state == "new" and not run.errors.exists()):
        return None  # finished, still going, or never started (a failure at start-up leaves an error)
    if state == "failed (non-finite loss)":
        stop = rows.whole("stop")[-1]
        return failure("nonfinite", f"stop row: non-finite loss at step {stop.get('failed_step')}")
    path, log = job_log(run)
    for line in reversed(log.splitlines()):  # the latest event: an earlier one may have been recovered from
        for pattern, kind in LOG_RULES:
            if pattern.search(line):
                return failure(kind, f"{path}: {line.strip()}")
    # Errors of the latest attempt: recorded after its start (or, failing at start-up, after the last one).
    starts = [r["time"] for r in rows.whole("start")]
    errors = sorted((e for e in read_jsonl(run.errors) if e["time"] >= max(starts, default=0)),
                    key=lambda e: e["time"])
    if errors:
        first = errors[0]["error"]
        for pattern, kind in ERROR_RULES:
            if pattern.search(first):
                return failure(kind, f"{run.errors}: rank {errors[0].get('rank')}: {first[:300]}")
    if state == "preempted":
        return failure("preempted", "stop row: stopped at a checkpoint on a signal, and the job left the queue")
    if state == "excluded":
        return failure("node_failure", "stop row: moved off a bad node, and the job left the queue")
    last = errors[-1]["error"][:300] if errors else "no error recorded; the run ended without a stop row"
    return failure("unknown", last)
