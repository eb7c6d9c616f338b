"""One row per run: where it is, how it is doing, and where its logs are.

    python -m harness.status                  # every run under log/
    python -m harness.status log/fineweb_10b --watch
    python -m harness.status log/ --json      # one JSON object per run

Works for runs started by `harness.submit` or `sbatch/train.sh` (both record their jobs in the run
directory's jobs.jsonl), for local runs, and for finished runs whose jobs have left the queue.
"""

import argparse
import json
import statistics
import time

from harness import records
from harness.cluster import branches
from harness.cluster.slurm import Accounted, accounting, queue_states
from harness.cluster.triage import classify
from harness.cluster.triage import state as triage_state
from harness.run_dir import RunDir, find_runs, read_jsonl
from harness.spec import read_spec

COLUMNS = ["name", "job", "state", "layout", "step", "train_loss", "val_loss", "eval_avg", "tok/s", "eta",
           "restarts", "goodput", "checkpoint", "nodes", "log"]
STRAGGLER_ROWS = 5  # a straggler is sustained when it is the slowest host in this many train rows in a row
STRAGGLER_SHOWN = 1.5  # ... by at least this ratio (or the run's cluster.straggler_ratio, if set)


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


def sustained_straggler(train_rows: list[dict], threshold: float) -> str | None:
    """"n3 (2.1x)" when the same host was the slowest by more than `threshold` in the last rows."""
    last = train_rows[-STRAGGLER_ROWS:]
    hosts = {r.get("slowest_host") for r in last}
    if len(last) < STRAGGLER_ROWS or len(hosts) != 1 or None in hosts:
        return None
    ratios = [r["slowest_ratio"] for r in last]
    return f"{hosts.pop()} ({statistics.median(ratios):.1f}x)" if min(ratios) > threshold else None


def shown_state(rows: list[dict], job: dict, queue: str | None, accounted: Accounted | None) -> str:
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


def run_status(run: RunDir, queue: str | None = None, accounted: Accounted | None = None) -> dict:
    """What harness.status shows of `run`: its summary (harness.records), its job (in the queue: `queue`;
    as Slurm's accounting recorded it: `accounted`), and why it failed."""
    spec = run.spec_dict()
    rows = records.read(run)
    summary = records.summarize(rows, read_jsonl(run.jobs))
    starts = [r for r in rows if r["kind"] == "start"]
    total = summary.total_steps or spec["schedule"]["steps"]
    job = run.last_job() or {}
    state = shown_state(rows, job, queue, accounted)
    error = None
    if state.startswith(("FAILED", "INTERRUPTED")) and (last_error := run.last_error()):
        error = last_error["error"]
    failed = classify(run, queue, rows, accounted)
    # A branch that nothing queued yet (its trunk has not written its checkpoint, died first, or ran outside Slurm).
    branch = branches.explain(run, read_spec(run)) if spec.get("branch_from") and not job else None
    if branch:
        state = "NOT QUEUED"
    latest = starts[-1]["restart"] if starts else None
    train = [r for r in rows if r["kind"] == "train" and r["restart"] == latest]
    straggler = sustained_straggler(train, spec["cluster"].get("straggler_ratio") or STRAGGLER_SHOWN)
    eta = None
    if summary.tokens_per_s and summary.steps < total and not failed and not state.startswith(("FINISHED", "FAILED")):
        eta = (total - summary.steps) * spec["train"]["batch_tokens"] / summary.tokens_per_s
    return {
        "name": spec["name"],
        "run_dir": str(run.path),
        "job": job.get("job_id"),
        "state": state,
        "layout": layout(starts[-1] if starts else None, job, spec["cluster"]),
        "step": summary.steps,
        "total_steps": total,
        "train_loss": summary.train_loss,
        "val_loss": summary.val_loss,
        "eval": summary.eval_average,
        "evals": summary.evals,
        "tokens_per_s": summary.tokens_per_s,
        "eta_s": eta,
        "restarts": summary.restarts,
        "checkpoint": run.newest_checkpoint_step(),
        "goodput": summary.goodput,
        "excluded": run.excluded_hosts(),
        "straggler": straggler,
        "log": job.get("log"),
        "error": error,
        "failure": failed.to_dict() if failed else None,
        "branch": branch,
    }


def record_accounting(run: RunDir, allocations: list[Accounted]) -> None:
    """Slurm's accounting of a job that left the queue, into the run's job records once (an `accounted` row:
    its submission and every allocation's start and end, which the goodput ledger prefers to its own), and
    the run's summary rewritten from them. A run directory this user cannot write is left as it is."""
    job = allocations[-1].job_id
    if any(j.get("event") == "accounted" and str(j.get("job_id")) == job for j in read_jsonl(run.jobs)):
        return
    try:
        run.record_job(event="accounted", job_id=job, state=allocations[-1].state, submitted_at=allocations[0].submit,
                       allocations=[[a.start, a.end] for a in allocations])
        records.refresh_summary(run)
    except OSError:
        pass


def statuses_of(runs: list[RunDir]) -> list[dict]:
    """Every run's status, Slurm asked once for all of them (one squeue, one sacct), and each run named
    apart: where experiments share a name, by their directories."""
    jobs = {run.path: str(job["job_id"]) for run in runs if (job := run.last_job())}
    queue = queue_states(list(jobs.values()))
    left = [j for j in jobs.values() if j not in queue]
    accounted = (accounting(left, every_start=True) or {}) if left else {}
    for run in runs:
        if (job := jobs.get(run.path)) in accounted:
            record_accounting(run, accounted[job])
    statuses = [run_status(run, queue.get(jobs.get(run.path, "")),
                           (accounted.get(jobs.get(run.path, "")) or [None])[-1]) for run in runs]
    names = [s["name"] for s in statuses]
    for s in statuses:
        if names.count(s["name"]) > 1:
            s["name"] = s["run_dir"]
    return statuses


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
    lines += [f"{s['name']}: {s['branch']}" for s in statuses if s["branch"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.status", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", default=["log"], help="run directories, or folders holding them")
    p.add_argument("--watch", type=float, nargs="?", const=10.0, help="refresh every N seconds (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    args = p.parse_args(argv)
    while True:
        statuses = statuses_of(find_runs(args.paths))
        if args.json:
            out = "\n".join(json.dumps(s) for s in statuses)
        else:
            out = table(statuses) if statuses else f"no runs under {' '.join(args.paths)}"
        if args.watch:
            print("\033[2J\033[H" + time.strftime("%H:%M:%S ") + out, flush=True)
            time.sleep(args.watch)
        else:
            print(out)
            return


if __name__ == "__main__":
    main()
