"""One row per run: where it is, how it is doing, and where its logs are; for a sweep, one line about all
of it first.

    python -m harness.status                             # every run under log/
    python -m harness.status log/fineweb_10b --watch
    python -m harness.status log/ --sort val_loss --top 5   # the five best runs (--top alone ranks by val_loss)
    python -m harness.status log/ --failed                # only runs that failed (with why, and what next)
    python -m harness.status log/ --json                  # one JSON object per run

Works for runs started by `harness.submit` or `sbatch/train.sh` (both record their jobs in the run
directory's jobs.jsonl), for local runs, and for finished runs whose jobs have left the queue. Slurm is
asked once per refresh for all the runs shown (one squeue, one sacct); what accounting says of a job that
left the queue is recorded in its run (jobs.jsonl) for the goodput ledger; each run's rows are read from
the cache beside its metrics.jsonl (harness.records.columns), so a second look at a large sweep, or a
refresh of --watch, reads only the rows added since.
"""

import argparse
import json
import math
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from harness import records
from harness.cluster import branches
from harness.cluster.slurm import Accounted, accounting, queue_states
from harness.cluster.triage import classify
from harness.cluster.triage import state as triage_state
from harness.run_dir import RunDir, find_runs, last_job, read_jsonl
from harness.spec import read_spec

COLUMNS = ["name", "job", "state", "layout", "step", "train_loss", "val_loss", "eval", "tok/s", "eta",
           "restarts", "goodput", "checkpoint", "nodes", "log"]
STRAGGLER_ROWS = 5  # a straggler is sustained when it is the slowest host in this many train rows in a row
STRAGGLER_SHOWN = 1.5  # ... by at least this ratio (or the run's cluster.straggler_ratio, if set)
# --sort: the keys of a run's status, and whether the largest comes first (losses and ETAs: the smallest).
SORTS = {"val_loss": False, "train_loss": False, "eval": True, "tokens_per_s": True, "goodput": True, "step": True,
         "restarts": True, "eta_s": False, "name": False, "state": False}
READERS = 4  # threads that read runs
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")


def layout(start: dict | None, job: dict, cluster: dict) -> str:
    """What the run runs on: from its latest start where it has one, else from its job or spec."""
    if start:
        nodes = len(set(start["hosts"])) or 1
        per_node, device = start["world_size"] // nodes, "cpu" if start["device"].startswith("cpu") else "gpu"
    else:
        nodes = job.get("nodes", cluster["nodes"])
        gpus = job.get("gpus_per_node", cluster["gpus_per_node"])
        per_node = cluster["procs_per_node"] or gpus or 1
        device = "gpu" if gpus else "cpu"
    return f"{nodes} node{'s' * (nodes > 1)} x {per_node} proc{'s' * (per_node > 1)} ({device})"


def sustained_straggler(rows: records.Rows, threshold: float) -> str | None:
    """"n3 (2.1x)" when the same host was the slowest by more than `threshold` in the last train rows of
    the latest start."""
    train = np.flatnonzero(rows.kind("train") & (rows["restart"] == rows["restart"].max(initial=0)))
    last = train[-STRAGGLER_ROWS:]
    hosts = set(rows["slowest_host"][last].tolist())
    if len(last) < STRAGGLER_ROWS or len(hosts) != 1 or None in hosts:
        return None
    ratios = rows["slowest_ratio"][last].tolist()
    return f"{hosts.pop()} ({statistics.median(ratios):.1f}x)" if min(ratios) > threshold else None


def slurm_states(jobs: list[str]) -> tuple[dict[str, str] | None, dict[str, list[Accounted]]]:
    """job id -> state, for the jobs in the queue (squeue; None where Slurm cannot be asked), and job id ->
    Slurm's accounting of every allocation of the others (sacct -D, where accounting exists): two calls to
    Slurm for all of `jobs`."""
    queue = queue_states(jobs)
    left = [j for j in jobs if j not in (queue or {})]
    return queue, (accounting(left, every_start=True) or {}) if left and queue is not None else {}


def shown_state(rows: records.Rows, job: dict | None, queue: str | None, accounted: Accounted | None) -> str:
    """The state column: the queue's while the job is in it; else the run's own records' (finished, failed
    (non-finite loss), ...), except where Slurm's accounting knows better why the job ended: a run that died
    without a stop row, or stopped at a checkpoint on a signal that no requeue followed, shows its job's
    final state (OUT_OF_MEMORY, NODE_FAIL, CANCELLED, TIMEOUT ...) where accounting exists."""
    if queue:
        return queue
    state = triage_state(rows, queue, job)
    if state in ("interrupted", "preempted") and accounted is not None and accounted.state not in ("COMPLETED", ""):
        return accounted.state
    return state.upper()


def run_status(run: RunDir, slurm: tuple[dict[str, str], dict[str, list[Accounted]]] | None = None,
               jobs: list[dict] | None = None) -> dict:
    """What harness.status shows of `run`: its summary (harness.records), its job, and why it failed.
    `slurm`: the states of the jobs (slurm_states), and `jobs`, the run's job records, when the caller
    asked for many runs at once."""
    spec, rows = run.spec_dict(), records.columns(run)
    jobs = read_jsonl(run.jobs) if jobs is None else jobs
    summary = records.summarize(rows, jobs)
    starts = rows.whole("start")
    total = summary.total_steps or spec["schedule"]["steps"]
    job = last_job(jobs) or {}
    queued, accounted = slurm or (slurm_states([str(job["job_id"])]) if job else ({}, {}))
    queue = (queued or {}).get(str(job.get("job_id")))
    acct = (accounted.get(str(job.get("job_id"))) or [None])[-1]
    # Where Slurm could not be asked, nothing says the job left the queue: the records speak alone.
    state = shown_state(rows, job if queued is not None else None, queue, acct)
    error = None
    if state.startswith(("FAILED", "INTERRUPTED")) and (last_error := run.last_error()):
        error = last_error["error"]
    failed = classify(run, queue, rows, acct, queue_known=queued is not None)
    # A branch that nothing queued yet (its trunk has not written its checkpoint, died first, or ran outside Slurm).
    branch = branches.explain(run, read_spec(run)) if spec.get("branch_from") and not job else None
    if branch:
        state = "NOT QUEUED"
    straggler = sustained_straggler(rows, spec["cluster"].get("straggler_ratio") or STRAGGLER_SHOWN)
    eta = None
    if summary.tokens_per_s and summary.steps < total and not failed and not state.startswith(("FINISHED", "FAILED")):
        eta = (total - summary.steps) * spec["train"]["batch_tokens"] / summary.tokens_per_s
    return {
        "name": spec["name"], "run_dir": str(run.path), "job": job.get("job_id"), "state": state,
        "layout": layout(starts[-1] if starts else None, job, spec["cluster"]), "step": summary.steps,
        "total_steps": total, "train_loss": summary.train_loss, "val_loss": summary.val_loss,
        "eval": summary.eval_average, "evals": summary.evals, "tokens_per_s": summary.tokens_per_s, "eta_s": eta,
        "restarts": summary.restarts, "checkpoint": run.newest_checkpoint_step(), "goodput": summary.goodput,
        "device_hours": summary.device_hours, "productive_device_hours": summary.ledger["device_hours"]["productive"],
        "excluded": run.excluded_hosts(), "straggler": straggler, "log": job.get("log"), "error": error,
        "failure": failed.to_dict() if failed else None, "branch": branch,
    }


def record_accounting(run: RunDir, allocations: list[Accounted], jobs: list[dict]) -> bool:
    """Slurm's accounting of a job that left the queue, into the run's job records once (an `accounted` row:
    its submission and every allocation's start and end, which the goodput ledger prefers to its own), and
    the run's summary rewritten from them. A run directory this user cannot write is left as it is. Returns
    whether it wrote."""
    job = allocations[-1].job_id
    if any(j.get("event") == "accounted" and str(j.get("job_id")) == job for j in jobs):
        return False
    try:
        run.record_job(event="accounted", job_id=job, state=allocations[-1].state, submitted_at=allocations[0].submit,
                       allocations=[[a.start, a.end] for a in allocations])
        records.refresh_summary(run)
    except OSError:
        return False
    return True


def statuses(runs: list[RunDir]) -> list[dict]:
    """Every run's status, with one question to Slurm for all of them (what accounting says of a job that left
    the queue goes into its run's records first), each run named apart: where runs of one experiment share
    a name, by their directories. Runs are read by a few threads: a first look at a sweep waits for its
    files and pyarrow's JSON reader, both of which let others go on."""
    jobs = [read_jsonl(run.jobs) for run in runs]
    slurm = slurm_states(sorted({str(last_job(j)["job_id"]) for j in jobs if last_job(j)}))
    for i, (run, j) in enumerate(zip(runs, jobs, strict=True)):
        if (job := last_job(j)) and (done := slurm[1].get(str(job["job_id"]))) and record_accounting(run, done, j):
            jobs[i] = read_jsonl(run.jobs)
    with ThreadPoolExecutor(READERS) as pool:
        found = list(pool.map(lambda run, j: run_status(run, slurm, j), runs, jobs))
    names = [s["name"] for s in found]
    for s in found:
        if names.count(s["name"]) > 1:
            s["name"] = s["run_dir"]
    return found


# ----------------------------------------------------------------------------- a sweep: filters, order, summary


def phase(s: dict) -> str:
    """running (in the queue, or writing rows), failed (triage found why it stopped), finished, or other
    (not started yet, or a state triage has no class for)."""
    if s["state"] in ACTIVE:
        return "running"
    if s["failure"]:
        return "failed"
    return "finished" if s["state"] in ("FINISHED", "COMPLETED") else "other"


def select(shown: list[dict], failed: bool = False, running: bool = False, sort: str | None = None,
           top: int | None = None) -> list[dict]:
    """The runs a command line asks for: only failed or running ones, sorted by a key of their status
    (a run without that value last), the first `top` (ranked by val_loss unless sorted otherwise)."""
    if failed or running:
        shown = [s for s in shown if (failed and phase(s) == "failed") or (running and phase(s) == "running")]
    sort = sort or ("val_loss" if top else None)
    if sort:
        descending = SORTS[sort]

        def key(s: dict) -> tuple:
            value = s[sort]
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            if missing or isinstance(value, str):
                return (missing, value or "")
            return (False, -value if descending else value)

        shown = sorted(shown, key=key)
    return shown[:top] if top else shown


def sweep_line(every: list[dict], shown: int) -> str:
    """One line about all the runs: how many in each phase, the best by val loss, device-hours and goodput."""
    phases = Counter(phase(s) for s in every)
    counts = ", ".join(f"{phases[p]} {p}" for p in ("running", "finished", "failed", "other") if phases[p])
    parts = [f"{len(every)} runs: {counts}"]
    scored = [s for s in every if s["val_loss"] is not None]
    if scored:
        best = min(scored, key=lambda s: s["val_loss"])
        parts.append(f"best {best['name']} (val {best['val_loss']:.4f})")
    hours = sum(s["device_hours"] for s in every)
    productive = sum(s["productive_device_hours"] for s in every)
    parts.append(f"{hours:,.2f} device-hours" + (f", goodput {productive / hours:.0%}" if hours > 0 else ""))
    if shown != len(every):
        parts.append(f"showing {shown}")
    return " | ".join(parts)


# ----------------------------------------------------------------------------- the table


def _fmt(s: dict) -> list[str]:
    def num(v: float | None, f: str) -> str:
        return "-" if v is None else format(v, f)

    eta = "-" if s["eta_s"] is None else time.strftime("%H:%M:%S", time.gmtime(s["eta_s"])) \
        if s["eta_s"] < 86400 else f"{s['eta_s'] / 86400:.1f}d"
    return [s["name"], str(s["job"] or "-"), s["state"], s["layout"], f"{s['step']}/{s['total_steps']}",
            num(s["train_loss"], ".4f"), num(s["val_loss"], ".4f"), num(s["eval"], ".4f"),
            num(s["tokens_per_s"], ",.0f"), eta, str(s["restarts"]), num(s["goodput"], ".0%"),
            str(s["checkpoint"] if s["checkpoint"] is not None else "-"), nodes(s), s["log"] or s["run_dir"]]


def nodes(s: dict) -> str:
    """Node health: a sustained straggler, and the nodes the run moved off."""
    parts = ([f"straggler {s['straggler']}"] if s["straggler"] else []) + (
        [f"excluded {','.join(s['excluded'])}"] if s["excluded"] else [])
    return "; ".join(parts) or "-"


def table(statuses: list[dict]) -> str:
    cells = [COLUMNS] + [_fmt(s) for s in statuses]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    failed = [s for s in statuses if s["failure"]]
    if failed:  # one line per run: what, then the next step; the evidence indented below it
        name_w = max(len(s["name"]) for s in failed)
        what_w = max(len(s["failure"]["what"]) for s in failed)
        lines.append("")
        for s in failed:
            f = s["failure"]
            lines.append(f"{s['name'].ljust(name_w)}  {f['what'].ljust(what_w)}  next: {f['next']}")
            lines.append(f"{'':{name_w}}  {f['evidence'][:200]}")
    lines += [f"{s['name']}: {s['error']}" for s in statuses if s["error"] and not s["failure"]]
    lines += [f"{s['name']}: {s['branch']}" for s in statuses if s.get("branch")]
    return "\n".join(lines)


def render(args: argparse.Namespace) -> str:
    every = statuses(find_runs(args.paths))
    shown = select(every, args.failed, args.running, args.sort, args.top)
    if args.json:
        return "\n".join(json.dumps(s) for s in shown)
    if not every:
        return f"no runs under {' '.join(args.paths)}"
    return (sweep_line(every, len(shown)) + "\n\n" if len(every) > 1 else "") + table(shown)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.status", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", default=["log"], help="run directories, or folders holding them")
    p.add_argument("--watch", type=float, nargs="?", const=10.0, help="refresh every N seconds (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    p.add_argument("--failed", action="store_true", help="only runs that failed")
    p.add_argument("--running", action="store_true", help="only runs in the queue (pending or running) or training")
    p.add_argument("--sort", choices=list(SORTS), help="order by this (losses ascending, the rest descending)")
    p.add_argument("--top", type=int, metavar="K", help="only the first K (by val_loss unless --sort says otherwise)")
    args = p.parse_args(argv)
    while True:
        out = render(args)
        if args.watch:
            print("\033[2J\033[H" + time.strftime("%H:%M:%S ") + out, flush=True)
            time.sleep(args.watch)
        else:
            print(out)
            return


if __name__ == "__main__":
    main()
