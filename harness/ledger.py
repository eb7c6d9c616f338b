"""Where the device-hours went: every second of every allocation of a run, in one category.

    queue       submitted (or requeued) until the allocation started (not allocated: no device-hours)
    startup     the allocation's start until its first training step ended: Slurm's launch, imports,
                rendezvous, data, restore, preflight, compile (the first step is mostly compilation)
    productive  training steps whose result was kept
    lost        training steps computed after the checkpoint that a later start resumed from: done twice
    eval        validation loss, HellaSwag, samples
    checkpoint  the part of each save that blocks training
    shutdown    the last record of a start until its allocation ended
    other       what no record explains (logging, the ranks' stop agreement): small when the records are whole

From the run's records: each start row carries the allocation's start (Slurm's StartTime), a `ready` row
ends each start's first step, train/eval/checkpoint rows carry the seconds they cover, and the launcher
records when each allocation's step ended (jobs.jsonl). Where Slurm keeps accounting, harness.status adds
what it says of a job that left the queue (an `accounted` row in jobs.jsonl: the submission, and the start
and end of every allocation, requeues included), and those times win. Without either, a start killed
outright (a dead node) is taken to end at its last record.
"""

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

CATEGORIES = ("startup", "productive", "lost", "eval", "checkpoint", "shutdown", "other")
EVAL_KINDS = ("val", "eval", "sample")  # rows whose seconds are evaluation (harness.records)


@dataclass
class Start:
    """One start of the trainer (a Slurm allocation, or a restart of the workers within one)."""

    restart: int
    job_id: str | None
    devices: int
    allocated_at: float  # the allocation's start (or, for a restart within one, the previous start's end)
    queued_at: float | None  # when it entered the queue (None: a restart within the same allocation)
    ended_at: float  # the allocation's end (or the last record, if the allocation was killed)
    seconds: dict[str, float] = field(default_factory=dict)  # category -> wall seconds
    startup: dict[str, float] = field(default_factory=dict)  # the start-up's seconds by phase (`startup_phases`)

    @property
    def wall(self) -> float:
        return self.ended_at - self.allocated_at


class Rows(Protocol):
    """A run's rows in columns, in file order (harness.records.Rows): one array per field, and the rows
    of the kinds kept whole (start, stop)."""

    def __getitem__(self, name: str) -> np.ndarray: ...

    def whole(self, kind: str) -> list[dict]: ...


def starts(rows: Rows, jobs: list[dict]) -> list[Start]:
    """The ledger of each start, from the run's metrics rows and job records. Rows added after the fact (an
    evaluation of a kept checkpoint, `later`) spent no time of the run's allocations."""
    keep = ~rows["later"]
    columns = {name: rows[name] if keep.all() else rows[name][keep]
               for name in ("kind", "restart", "time", "step", "steps", "seconds")}
    start_rows = [r for r in rows.whole("start") if not r.get("later")]
    first_start: dict[int, dict] = {}
    for r in start_rows:
        first_start.setdefault(r["restart"], r)
    ends = sorted(j["time"] for j in jobs if j.get("event") == "step_end")
    # harness.submit records a job when it submits it; sbatch/train.sh when it starts, with Slurm's
    # submission time; accounting, when it came.
    submitted = sorted([j["time"] for j in jobs if j.get("event", "submit") == "submit"]
                       + [j["submitted_at"] for j in jobs if j.get("submitted_at")])
    accounted = {(str(j["job_id"]), a): b for j in jobs if j.get("event") == "accounted"
                 for a, b in j["allocations"] if a is not None and b is not None}  # (job, start) -> end
    resumed_from = {r["restart"]: r["step"] for r in start_rows}
    out: list[Start] = []
    previous_row: dict | None = None  # the previous start row (a Start's allocated_at may be moved)
    for restart in sorted(set(columns["restart"].tolist())):
        start = first_start.get(restart)
        if start is None:
            continue
        previous = out[-1] if out else None
        same_allocation = previous_row is not None and start.get("allocated_at") is not None \
            and start.get("allocated_at") == previous_row.get("allocated_at") \
            and start.get("job_id") == previous_row.get("job_id")
        previous_row = start
        allocated = start.get("allocated_at") or start["time"]
        if same_allocation:  # the workers restarted within one allocation: from where the last start ended
            allocated = previous.ended_at
        in_start = columns["restart"] == restart
        mine = columns if in_start.all() else {name: values[in_start] for name, values in columns.items()}
        last = float(mine["time"].max())
        end = next((t for t in ends if t >= last), None)
        nxt = next((r for r in start_rows if r["restart"] > restart), None)
        if end is None or (nxt is not None and end > nxt["time"]):
            end = last  # killed outright, or the workers restarted within the allocation
        within = nxt is not None and (nxt.get("allocated_at"), nxt.get("job_id")) == (start.get("allocated_at"),
                                                                                      start.get("job_id"))
        if not within and (found := accounted.get((str(start.get("job_id")), start.get("allocated_at")))):
            end = max(found, last)  # the allocation's end as Slurm's accounting has it
        queued = None
        if not same_allocation:  # in the queue since its submission, or since the last allocation ended
            since = [t for t in submitted if t <= allocated] + ([previous.ended_at] if previous else [])
            queued = max(since) if since else None
        ledger = Start(restart, start.get("job_id"), start.get("world_size", 1), allocated, queued, end)
        ledger.seconds = categorize(mine, allocated, end, kept_until(restart, resumed_from))
        preflight = [r for r in rows.whole("preflight") if r["restart"] == restart]
        ledger.startup = startup_phases(mine, preflight, start, allocated)
        out.append(ledger)
    return out


def kept_until(restart: int, resumed_from: dict[int, int]) -> float:
    """The last step of `restart` whose result was kept: later starts resumed at or after it."""
    later = [step for r, step in resumed_from.items() if r > restart]
    return min(later) if later else float("inf")


def total(values: np.ndarray) -> float:
    """The sum in row order, as the rows were added up one by one (the same float to the last bit)."""
    return sum(values.tolist(), 0.0)


def categorize(rows: dict[str, np.ndarray], allocated: float, ended: float, kept: float) -> dict[str, float]:
    """Seconds per category of one start's rows (columns, in file order)."""
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    kind, took = rows["kind"], np.nan_to_num(rows["seconds"].astype(float))
    evals = np.logical_or.reduce([kind == k for k in EVAL_KINDS])
    seconds["eval"] = total(took[evals])
    seconds["checkpoint"] = total(took[kind == "checkpoint"])
    train = (kind == "train") & (took != 0)
    step, took_train = rows["step"][train].astype(float), took[train]
    steps = np.nan_to_num(rows["steps"][train].astype(float))
    steps[steps == 0] = 1  # a row after a start covers its one (untimed) step
    first = step - steps + 1  # the steps a row covers: first .. step
    kept_steps = np.where(kept < step, np.maximum(0, np.minimum(step, kept) - first + 1), steps)
    seconds["productive"] = total(took_train * kept_steps / steps)
    seconds["lost"] = total(took_train * (steps - kept_steps) / steps)
    ready = np.flatnonzero(kind == "ready")
    if len(ready):  # evaluations before the first step (at step 0) are not start-up
        ready_time = rows["time"][ready[0]]
        before = total(took[evals & (rows["time"] <= ready_time)])
        seconds["startup"] = float(ready_time) - allocated - before
        seconds["shutdown"] = ended - float(rows["time"].max())
    else:  # it never finished a step: all of it was start-up
        seconds["startup"] = ended - allocated - seconds["eval"] - seconds["checkpoint"]
    seconds["other"] = (ended - allocated) - sum(v for k, v in seconds.items() if k != "other")
    return seconds


def startup_phases(rows: dict[str, np.ndarray], preflight: list[dict], start: dict,
                   allocated: float) -> dict[str, float]:
    """Where a start's start-up went, by phase: those its start row measured before itself (launch,
    torchrun, imports, process_group, build, restore), then the preflight (its rows' seconds), the first
    step (compilation, warm-up: from the start row to the `ready` row, evaluations and preflight apart), and
    what is left ("other": the start row's own work, a restart within an allocation's gap)."""
    kind = rows["kind"]
    ready = np.flatnonzero(kind == "ready")
    if not len(ready):
        return {}
    ready_time = float(rows["time"][ready[0]])
    took = np.nan_to_num(rows["seconds"].astype(float))
    evals = total(took[np.logical_or.reduce([kind == k for k in EVAL_KINDS]) & (rows["time"] <= ready_time)])
    phases = dict(start.get("startup") or {})
    phases["preflight"] = max((r.get("seconds") or 0.0 for r in preflight), default=0.0)
    phases["first_step"] = max(0.0, ready_time - start["time"] - phases["preflight"] - evals)
    phases["other"] = ready_time - allocated - evals - sum(phases.values())
    return {k: round(v, 3) for k, v in phases.items()}


@dataclass
class Ledger:
    """A run's totals: device-hours per category, queue hours, goodput."""

    device_hours: dict[str, float]
    queue_hours: float
    allocated_device_hours: float
    goodput: float | None  # productive / allocated device time
    starts: list[dict]

    def to_dict(self) -> dict:
        """As dataclasses.asdict, without its deep copies (a summary of each of hundreds of runs makes one)."""
        return {**vars(self), "device_hours": dict(self.device_hours), "starts": [dict(s) for s in self.starts]}


def ledger(rows: Rows, jobs: list[dict]) -> Ledger:
    found = starts(rows, jobs)
    hours = dict.fromkeys(CATEGORIES, 0.0)
    for s in found:
        for k, v in s.seconds.items():
            hours[k] += v * s.devices / 3600
    allocated = sum(s.wall * s.devices for s in found) / 3600
    queue = sum(s.allocated_at - s.queued_at for s in found if s.queued_at is not None) / 3600
    return Ledger({k: round(v, 6) for k, v in hours.items()}, round(queue, 6), round(allocated, 6),
                  round(hours["productive"] / allocated, 4) if allocated > 0 else None,
                  [{**vars(s), "seconds": dict(s.seconds), "wall": s.wall} for s in found])
