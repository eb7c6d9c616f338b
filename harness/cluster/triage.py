"""Why a run did not finish: one class per run, read from its own records and Slurm's, and the next step.

The records, most authoritative first: the run's stop rows (a non-finite loss), the Slurm log of its
last job, latest line first (Slurm's own lines: node failure, time limit, cancellation, OOM kills;
submitit's: timeouts exhausted), Slurm's accounting of the job (OUT_OF_MEMORY, NODE_FAIL, TIMEOUT, CANCELLED,
where accounting exists), the errors its ranks recorded in the latest attempt (the earliest is the cause, the
others its echoes; but a peer's lost connection yields to the next), torchrun's failure summary in the log (a
rank killed by a signal, which is what the kernel's OOM killer leaves, since a SIGKILLed process writes no
traceback), and its last stop row (preempted or moved off a bad node, and then not requeued). Nothing is
guessed: what no record explains is "unknown", with the last error line.

A run whose job is still queued or running has not failed; neither has a finished one. A run whose job left
the queue while its records end with no stop row did not stop: it died (`state`).
"""

import re
import signal
from dataclasses import dataclass
from pathlib import Path

from harness import records
from harness.cluster.slurm import CANCELLED_LINE, Accounted
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
    "host_oom": ("host out of memory", "the host's memory ran out (the kernel killed a rank): lower "
                 "train.micro_batch or raise cluster.mem_gb, then resubmit", False),
    "killed": ("a rank was killed by a signal", "resubmit; if it comes again, it is most likely the host's OOM "
               "killer (no traceback): check the node's memory (sacct MaxRSS, dmesg) and lower train.micro_batch",
               True),
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
    # A user's scancel of the job (a signal sent to the steps alone leaves the job to decide).
    (CANCELLED_LINE, "cancelled"),
]
# torchrun's failure summary of a worker that died of a signal: "exitcode  : -9 (pid: 1234)". Weaker evidence than
# a rank's own error (a rank that ran out of memory or timed out in a collective is killed too, by torchrun), but
# stronger than its peers' lost connections.
KILLED_LINE = re.compile(r"exitcode\s*:\s*-\d+ \(pid")
# Slurm's accounting state of a job that left the queue -> the class it shows, where no record says more.
ACCOUNTED = {"OUT_OF_MEMORY": "host_oom", "NODE_FAIL": "node_failure", "TIMEOUT": "timeouts",
             "CANCELLED": "cancelled", "PREEMPTED": "preempted", "BOOT_FAIL": "node_failure"}
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


def state(rows: records.Rows, queued: str | None, job: dict | None, now: float | None = None) -> str:
    """How a run stands, from its rows and whether its job is in the queue: the rows' rule
    (harness.run_dir.run_state), except that a run of a job that left the queue (`queued` None) cannot be
    running: it died without a stop row ("interrupted")."""
    found = rows.state(now)
    return "interrupted" if found == "running" and job and not queued else found


def classify(run: RunDir, queue_state: str | None, rows: records.Rows | None = None,
             accounted: Accounted | None = None, queue_known: bool = True) -> Failure | None:
    """The class of a run that did not finish; None for a finished run or one still in the queue.
    `rows`: the run's metrics rows (harness.records.columns), when the caller has read them already;
    `accounted`: its last job as Slurm's accounting records it, where accounting exists; `queue_known`:
    False where Slurm could not be asked (then a run with recent rows is taken at its word)."""
    if queue_state:
        return None
    rows = records.columns(run) if rows is None else rows
    now = state(rows, queue_state, run.last_job() if queue_known else None)
    if now in ("finished", "running") or (now == "new" and not run.errors.exists()):
        return None  # finished, still going, or never started (a failure at start-up leaves an error)
    if now == "failed (non-finite loss)":
        stop = rows.whole("stop")[-1]
        return failure("nonfinite", f"stop row: non-finite loss at step {stop.get('failed_step')}")
    path, log = job_log(run)
    for line in reversed(log.splitlines()):  # the latest event: an earlier one may have been recovered from
        for pattern, kind in LOG_RULES:
            if pattern.search(line):
                return failure(kind, f"{path}: {_with_signal(line.strip())}")
    if accounted is not None and accounted.state in ACCOUNTED:
        return failure(ACCOUNTED[accounted.state], f"sacct: job {accounted.job_id} {accounted.state}, exit code "
                                                   f"{accounted.exit_code} (steps: {accounted.derived_exit_code})")
    # Errors of the latest attempt: recorded after its start (or, failing at start-up, after the last one).
    starts = [r["time"] for r in rows.whole("start")]
    errors = sorted((e for e in read_jsonl(run.errors) if e["time"] >= max(starts, default=0)),
                    key=lambda e: e["time"])
    killed = next((line.strip() for line in reversed(log.splitlines()) if KILLED_LINE.search(line)), None)
    if errors:
        first = errors[0]["error"]
        for pattern, kind in ERROR_RULES:
            if pattern.search(first) and not (kind == "dead_rank" and killed):
                return failure(kind, f"{run.errors}: rank {errors[0].get('rank')}: {first[:300]}")
    if killed:
        return failure("killed", f"{path}: {_with_signal(killed)}")
    if now == "preempted":
        return failure("preempted", "stop row: stopped at a checkpoint on a signal, and the job left the queue")
    if now == "excluded":
        return failure("node_failure", "stop row: moved off a bad node, and the job left the queue")
    last = errors[-1]["error"][:300] if errors else "no error recorded; the run ended without a stop row"
    return failure("unknown", last)


def _with_signal(line: str) -> str:
    """torchrun's "exitcode  : -9 (pid: 1234)" with the signal named."""
    found = re.search(r"exitcode\s*:\s*-(\d+)", line)
    if not found:
        return line
    try:
        return f"{line} ({signal.Signals(int(found.group(1))).name})"
    except ValueError:
        return line
