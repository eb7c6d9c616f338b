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

import contextlib
import dataclasses
import functools
import io
import json
import statistics
import subprocess
import time
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.ipc  # noqa: F401 - pa.ipc
import pyarrow.json as pj

from harness import ledger
from harness.atomic import replacing, write_text
from harness.run_dir import RunDir, read_jsonl, state_of

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


def upgrade(rows: list[dict], version: int = SCHEMA_VERSION) -> list[dict]:
    """Rows of any schema version in the current one. The version of a row is its start's (rows before
    the first start, e.g. a standalone preflight's, are of `version`: the current one, unless they
    continue rows read before)."""
    out = []
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


def history(rows: "Rows") -> tuple[int, dict | None]:
    """What a new start needs from the earlier ones: how many there were, and the last stop row."""
    stops = rows.whole("stop")
    return len(rows.whole("start")), stops[-1] if stops else None


# ----------------------------------------------------------------------------- the rows in columns

# The kinds of nearly every row, read into columns (every field of theirs). Every row has its kind,
# restart and time in columns; rows of the other kinds (start, stop, preflight, and any kind this code
# does not know) are kept whole as well, as dicts.
BULK = (Train, Val, Eval, Sample, Checkpoint, Ready)
BULK_KINDS = tuple(cls.kind for cls in BULK)
PY_TYPES = {pa.int64(): int, pa.float64(): float, pa.string(): str, pa.bool_(): bool}
NUMPY_TYPES = {pa.int64(): np.int64, pa.float64(): np.float64}
CACHE_VERSION = 2  # of the cache's layout: a cache of another version is rebuilt
TAIL_BYTES = 64  # the start and end of the parsed part, kept to recognise an append


def _arrow_type(cls: type, name: str, hint: object) -> pa.DataType:
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    types = [t for t, py in PY_TYPES.items() if py is args[0]]
    if len(args) != 1 or not types:
        raise TypeError(f"{cls.__name__}.{name}: {hint} is not a scalar; its kind cannot be in BULK")
    return types[0]


def _schema() -> pa.Schema:
    """kind, restart and time, then the fields of the BULK kinds, in order, once each."""
    fields = {"kind": pa.string(), "restart": pa.int64(), "time": pa.float64()}
    for cls in BULK:
        for name, hint in typing.get_type_hints(cls).items():
            if fields.setdefault(name, _arrow_type(cls, name, hint)) != _arrow_type(cls, name, hint):
                raise TypeError(f"{cls.__name__}.{name}: another kind has a field of this name and another type")
    return pa.schema(list(fields.items()))


SCHEMA = _schema()


def fields_of(kind: str) -> list[str]:
    """The columns a row of `kind` fills: kind, restart and time, and its own fields (for a BULK kind), or
    every column."""
    cls = KINDS.get(kind)
    if cls not in BULK:
        return SCHEMA.names
    return ["kind", "restart", "time", *(f.name for f in dataclasses.fields(cls))]


class Rows:
    """A run's rows in columns, in file order: every field of the BULK kinds, and the kind, restart and
    time of every row; the rows of other kinds (start, stop, preflight, ...) also whole, as dicts. What
    summaries, harness.status and analysis read (`read` gives every row as a dict, as written)."""

    def __init__(self, table: pa.Table, whole: list[dict]):
        self.table = table
        self._whole = whole
        self._arrays: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, name: str) -> np.ndarray:
        """One field of every row: numbers (floats with NaN where a row has none; integers while every
        row has one), booleans (False where missing), or text (objects, None where missing; the kind
        as fixed-width text, which numpy compares in C)."""
        if name not in self._arrays:
            if name == "kind":
                kinds = self.table.column(name).to_pylist()
                self._arrays[name] = np.array(kinds, dtype=f"U{max(map(len, kinds), default=1)}")
            else:
                self._arrays[name] = _numpy(self.table.column(name))
        return self._arrays[name]

    def kind(self, *kinds: str) -> np.ndarray:
        """Which rows are of `kinds`."""
        return np.logical_or.reduce([self["kind"] == k for k in kinds]) if kinds else np.zeros(len(self), bool)

    def kept(self, kind: str, where: np.ndarray | None = None) -> np.ndarray:
        """The indices of the rows of `kind` (and `where`), one per step, sorted by step: a step logged again
        by a later start (which resumed from an earlier checkpoint) keeps the later row, the one that led to
        the final model."""
        rows = np.flatnonzero((self["kind"] == kind) & (True if where is None else where))[::-1]  # latest first:
        return rows[np.unique(self["step"][rows], return_index=True)[1]]  # np.unique keeps the first

    def whole(self, kind: str | None = None) -> list[dict]:
        """The rows kept whole (of `kind`), in file order."""
        return [r for r in self._whole if kind is None or r["kind"] == kind]

    def dicts(self, kind: str) -> list[dict]:
        """The rows of a BULK `kind` as dicts of the fields they have: for the kinds with few rows (eval)."""
        rows = [self.table.slice(i, 1).to_pylist()[0] for i in np.flatnonzero(self["kind"] == kind)]
        return [{k: v for k, v in row.items() if v is not None} for row in rows]

    def state(self, now: float | None = None) -> str:
        """How the run stands (harness.run_dir.run_state)."""
        stops = self.whole("stop")
        return state_of([r["time"] for r in self.whole("start")], stops[-1] if stops else None,
                        float(self["time"].max()) if len(self) else None, now)

    def __add__(self, more: "Rows") -> "Rows":
        return Rows(pa.concat_tables([self.table, more.table]), self._whole + more._whole)

    @classmethod
    def from_dicts(cls, rows: list[dict]) -> "Rows":
        """Rows (of the current schema) as dicts, in columns. A value of the wrong type for its column (in a
        row of a kind that shares a field name with a BULK kind) is left out of the column."""
        rows = [r for r in rows if "kind" in r]
        columns = [_array([r.get(f.name) for r in rows], f.type) for f in SCHEMA]
        return cls(pa.Table.from_arrays(columns, schema=SCHEMA), [r for r in rows if r["kind"] not in BULK_KINDS])


def _array(values: list, type_: pa.DataType) -> pa.Array:
    def fits(v: object) -> bool:
        if v is None:
            return True
        if isinstance(v, bool):
            return type_ == pa.bool_()
        return isinstance(v, PY_TYPES[type_]) or (type_ == pa.float64() and isinstance(v, int))

    return pa.array(values if all(map(fits, values)) else [v if fits(v) else None for v in values], type_)


def _numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A column in numpy, read from its Arrow buffers: pyarrow's own to_numpy imports pandas, which costs
    a login-node command (harness.status) a second and 100 MB."""
    parts = [_numpy_chunk(chunk) for chunk in column.chunks]
    if not parts:
        return np.array([], dtype=object if column.type == pa.string() else NUMPY_TYPES.get(column.type, bool))
    return np.concatenate(parts)


def _numpy_chunk(a: pa.Array) -> np.ndarray:
    if a.type == pa.string():
        return np.array(a.to_pylist(), dtype=object)
    n = len(a)
    if a.null_count == n:  # its buffers may be empty
        return np.zeros(n, bool) if a.type == pa.bool_() else np.full(n, np.nan)

    def bits(buffer: pa.Buffer) -> np.ndarray:
        return np.unpackbits(np.frombuffer(buffer, np.uint8), bitorder="little")[a.offset:a.offset + n].view(bool)

    validity, data = a.buffers()[:2]
    valid = bits(validity) if a.null_count else None
    if a.type == pa.bool_():
        return bits(data) if valid is None else bits(data) & valid  # a missing boolean is False
    values = np.frombuffer(data, NUMPY_TYPES[a.type])[a.offset:a.offset + n]
    if valid is None:
        return values
    values = values.astype(np.float64)
    values[~valid] = np.nan
    return values


@dataclass
class Parsed:
    """How much of metrics.jsonl a table holds (stored in the cache, to tell what changed since)."""

    size: int  # metrics.jsonl's size and modification time when it was read
    mtime_ns: int
    parsed: int  # the bytes read into the table: up to the end of the last whole line
    lines: int  # the lines in them
    head: str  # their first and last TAIL_BYTES bytes (hex; the times in the rows make them unique): an
    tail: str  # append leaves them in place, a rewrite of the file does not
    version: int  # the schema version in force at their end (the last start's)
    skipped: list[int] = field(default_factory=list)  # the numbers of the lines that are not JSON objects
    cache_version: int = CACHE_VERSION


def columns(run: RunDir) -> Rows:
    """Every metrics row of `run` (each has a kind) in columns, in file order, in the current schema.

    From the cache beside metrics.jsonl (RunDir.metrics_cache) when the file's size and modification time
    are those it was made from; when the file only grew (an append: the cache's last bytes are still in
    place), the cache plus the lines after them; otherwise from the whole file. The cache is then
    rewritten (atomically; a directory that cannot be written goes without). As `read` does, a line
    that is not a whole JSON object (cut short by a crash) is skipped with one warning naming the file."""
    try:
        stat = run.metrics.stat()
    except FileNotFoundError:
        return Rows(SCHEMA.empty_table(), [])
    rows, done = load_cache(run.metrics_cache)
    if done is None or (done.size, done.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
        with open(run.metrics, "rb") as f:
            if done is None or not _appended(f, done, stat.st_size):
                rows, done = None, Parsed(0, 0, 0, 0, "", "", SCHEMA_VERSION)
            f.seek(done.parsed)
            new, done = parse(f.read(stat.st_size - done.parsed), done)  # not what a writer appended since stat
        rows = new if rows is None else rows + new
        done.size, done.mtime_ns = stat.st_size, stat.st_mtime_ns
        with contextlib.suppress(OSError):
            save_cache(run.metrics_cache, rows, done)
    skipped = done.skipped + ([done.lines + 1] if stat.st_size > done.parsed else [])
    if skipped:
        where = ", ".join(map(str, skipped[:5])) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(f"{run.metrics}: skipping {len(skipped)} truncated or corrupt line(s) (line {where})",
                      stacklevel=2)
    return rows


def _appended(f: typing.BinaryIO, done: Parsed, size: int) -> bool:
    """Whether the file only grew since `done` (an append): it is larger, and what `done` parsed begins and
    ends with the same bytes as then. (A file of the same size with a new modification time was rewritten.)"""
    if size <= done.size:
        return False
    head, tail = bytes.fromhex(done.head), bytes.fromhex(done.tail)
    f.seek(0)
    if f.read(len(head)) != head:
        return False
    f.seek(done.parsed - len(tail))
    return f.read(len(tail)) == tail


def parse(data: bytes, before: Parsed) -> tuple[Rows, Parsed]:
    """The whole lines of `data` (the file after what `before` parsed) in columns, and what has been
    parsed with them. Rows of the current schema go through pyarrow's JSON reader; when it refuses the
    chunk (a line that is not a JSON object, rows of an older schema version), line by line."""
    whole = data[: data.rfind(b"\n") + 1]  # the rest is a line cut short, or still being written
    rows, skipped = None, []
    if before.version == SCHEMA_VERSION:
        with contextlib.suppress(pa.ArrowInvalid):
            rows = _fast(whole)
    if rows is None:
        rows, skipped = _slow(whole, before)
    starts = rows.whole("start")
    return rows, Parsed(size=0, mtime_ns=0, parsed=before.parsed + len(whole),
                        lines=before.lines + whole.count(b"\n"),
                        head=(bytes.fromhex(before.head) + whole)[:TAIL_BYTES].hex(),
                        tail=(bytes.fromhex(before.tail) + whole)[-TAIL_BYTES:].hex(),
                        version=starts[-1].get("schema_version", 1) if starts else before.version,
                        skipped=before.skipped + [before.lines + n for n in skipped])


PARSE_OPTIONS = pj.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore")


def _fast(whole: bytes) -> Rows | None:
    """pyarrow's JSON reader on whole lines of the current schema; None where it cannot serve: an object
    without a kind, a start of an older schema version."""
    lines = [line for line in whole.split(b"\n") if line.strip()]
    if not lines:
        return Rows(SCHEMA.empty_table(), [])
    options = pj.ReadOptions(use_threads=False, block_size=max(1 << 20, len(whole)))  # one block: no line straddles
    table = pj.read_json(io.BytesIO(whole), read_options=options, parse_options=PARSE_OPTIONS).select(SCHEMA.names)
    kinds = table.column("kind").to_pylist()
    if table.num_rows != len(lines) or None in kinds:
        return None
    whole_rows = [json.loads(lines[i]) for i, kind in enumerate(kinds) if kind not in BULK_KINDS]
    if any(r.get("schema_version", 1) != SCHEMA_VERSION for r in whole_rows if r["kind"] == "start"):
        return None
    return Rows(table, whole_rows)


def _slow(whole: bytes, before: Parsed) -> tuple[Rows, list[int]]:
    """Line by line: the rows (upgraded from the version in force), and the numbers of the lines (from 1
    in `whole`) that are not JSON objects."""
    rows, bad = [], []
    for n, line in enumerate(whole.decode("utf-8", errors="replace").split("\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            bad.append(n)
        elif "kind" in row:
            rows.append(row)
    return Rows.from_dicts(upgrade(rows, before.version)), bad


def load_cache(path: Path) -> tuple[Rows | None, Parsed | None]:
    """The rows a cache holds and what they were parsed from; (None, None) if there is none, or it is
    unreadable or of another layout."""
    try:
        with pa.OSFile(str(path)) as source:
            reader = pa.ipc.open_file(source)
            meta = reader.schema.metadata
            done = Parsed(**json.loads(meta[b"parsed"]))
            if done.cache_version != CACHE_VERSION or not reader.schema.remove_metadata().equals(SCHEMA):
                return None, None
            return Rows(reader.read_all().replace_schema_metadata(None), json.loads(meta[b"whole"])), done
    except (OSError, pa.ArrowInvalid, KeyError, TypeError, ValueError):
        return None, None


def save_cache(path: Path, rows: Rows, done: Parsed) -> None:
    """The cache, atomically (harness.atomic; not waiting for the disk: a cache lost in a crash, or cut
    short, is unreadable and rebuilt): an Arrow IPC file, LZ4-compressed, whose metadata holds the rows
    kept whole and what the file was parsed from."""
    schema = SCHEMA.with_metadata({"parsed": json.dumps(dataclasses.asdict(done)), "whole": json.dumps(rows.whole())})
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with replacing(path, durable=False) as f, pa.ipc.new_file(f, schema, options=options) as out:
        out.write_table(rows.table.combine_chunks())


# ----------------------------------------------------------------------------- how a run stands

def state(run: RunDir, now: float | None = None) -> str:
    """How `run` stands (harness.run_dir.run_state), from its records."""
    return columns(run).state(now)


# ----------------------------------------------------------------------------- the run summary


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


def summarize(rows: Rows | list[dict], jobs: list[dict], now: float | None = None) -> Summary:
    """The summary of a run from its rows (in columns, or as dicts of the current schema) and its job
    records."""
    rows = rows if isinstance(rows, Rows) else Rows.from_dicts(rows)
    starts = rows.whole("start")
    first, last = (starts[0], starts[-1]) if starts else ({}, {})
    train, val = rows.kept("train"), rows.kept("val")
    loss, speed, mfu = rows["loss"], rows["tokens_per_s"], rows["mfu"]
    evals = {task: {"step": r["step"], "examples": r.get("examples"), "acc": r["acc"], "acc_norm": r.get("acc_norm"),
                    "headline": headline(r)} for task, r in sorted(latest_evals(rows.dicts("eval")).items())}
    recent = train[np.nan_to_num(speed[train]) != 0][-20:]  # the last 20 timed rows
    mfus = mfu[recent][~np.isnan(mfu[recent])]
    book = ledger.ledger(rows, jobs)
    return Summary(
        schema_version=SCHEMA_VERSION,
        state=rows.state(now),
        steps=int(rows["step"][rows.kind("train", "checkpoint")].max(initial=0)),
        total_steps=last.get("total_steps"),
        tokens=int(rows["tokens"][train[-1]]) if len(train) else 0,
        parameters=first.get("parameters"),
        parameters_non_embedding=first.get("parameters_non_embedding"),
        flops_per_token=first.get("flops_per_token"),
        flops=first["flops_per_token"] * float(rows["tokens"][train[-1]]) if len(train) and first.get(
            "flops_per_token") else None,
        train_loss=number(loss[train[-1]]) if len(train) else None,
        val_loss=number(loss[val[-1]]) if len(val) else None,
        best_val_loss=float(loss[val].min()) if len(val) else None,
        val_bpb=number(rows["bpb"][val[-1]]) if len(val) else None,
        evals=evals,
        eval_average=statistics.fmean(e["headline"] for e in evals.values()) if evals else None,
        tokens_per_s=statistics.median(speed[recent].tolist()) if len(recent) else None,
        mfu=statistics.median(mfus.tolist()) if len(mfus) else None,
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


def number(value: float) -> float | None:
    """A column's value as JSON has it: None where the row had none (NaN)."""
    return None if np.isnan(value) else float(value)


def refresh_summary(run: RunDir) -> Summary:
    """Derive `run`'s summary from its records and write summary.json (atomically)."""
    summary = summarize(columns(run), read_jsonl(run.jobs))
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
