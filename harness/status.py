"""One row per run: where it is, how it is doing, and where its logs are.

    python -m harness.status                  # every run under log/
    python -m harness.status log/fineweb_10b --watch
    python -m harness.status log/ --json      # one JSON object per run

Works for runs started by `harness.submit` or `sbatch/train.sh` (both record their jobs in the run
directory's jobs.jsonl), for local runs, and for finished runs whose jobs have left the queue.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import time

from harness.ledger import ledger
from harness.run_dir import RunDir, find_runs, read_jsonl, run_state
from harness.triage import classify

COLUMNS = ["name", "job", "state", "layout", "step", "train_loss", "val_loss", "hellaswag", "tok/s", "eta",
           "restarts", "goodput", "checkpoint", "nodes", "log"]
STRAGGLER_ROWS = 5  # a straggler is sustained when it is the slowest host in this many train rows in a row
STRAGGLER_SHOWN = 1.5  # ... by at least this ratio (or the run's cluster.straggler_ratio, if set)


def queue_state(job_id: str) -> str | None:
    """The job's state while squeue lists it (pending, running, ...); None once it left the queue."""
    if shutil.which("squeue"):
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    return None


def accounting_state(job_id: str) -> str | None:
    """The job's final state from sacct, once it left the queue (if accounting exists)."""
    if shutil.which("sacct"):
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                             text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[-1].split()[0]
    return None


def queued_job(run: RunDir) -> str | None:
    """The id of a job of this run that is still pending or running, if any."""
    job = run.last_job()
    return job["job_id"] if job and queue_state(str(job["job_id"])) else None


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


def run_status(run: RunDir) -> dict:
    spec = run.spec_dict()
    rows = run.metrics_rows()
    last = {r["kind"]: r for r in rows}  # the newest row of each kind
    total = spec["schedule"]["steps"]
    step = max((r["step"] for r in rows if r["kind"] in ("train", "checkpoint")), default=0)
    job = run.last_job() or {}
    # In the queue (triage waits for it), else what accounting says of it, else what its own log says.
    queue = queue_state(str(job["job_id"])) if job else None
    state = queue or (accounting_state(str(job["job_id"])) if job else None) or run_state(rows).upper()
    error = None
    if state.startswith(("FAILED", "INTERRUPTED")) and (last_error := run.last_error()):
        error = last_error["error"]
    failed = classify(run, queue, rows)

    train = [r for r in rows if r["kind"] == "train" and r["restart"] == last.get("start", {}).get("restart")]
    straggler = sustained_straggler(train, spec["cluster"].get("straggler_ratio") or STRAGGLER_SHOWN)
    recent = [r["tokens_per_s"] for r in rows if r["kind"] == "train" and r.get("tokens_per_s")][-20:]
    tok_s = statistics.median(recent) if recent else None
    eta = None
    if tok_s and step < total and not failed and not state.startswith(("FINISHED", "FAILED")):
        eta = (total - step) * spec["train"]["batch_tokens"] / tok_s
    return {
        "name": spec["name"],
        "run_dir": str(run.path),
        "job": job.get("job_id"),
        "state": state,
        "layout": layout(last.get("start"), job, spec["cluster"]),
        "step": step,
        "total_steps": total,
        "train_loss": last.get("train", {}).get("loss"),
        "val_loss": last.get("val", {}).get("loss"),
        "hellaswag": last.get("hellaswag", {}).get("acc_norm"),
        "tokens_per_s": tok_s,
        "eta_s": eta,
        "restarts": max(0, sum(r["kind"] == "start" for r in rows) - 1),
        "checkpoint": run.newest_checkpoint_step(),
        "goodput": ledger(rows, read_jsonl(run.jobs)).goodput,
        "excluded": run.excluded_hosts(),
        "straggler": straggler,
        "log": job.get("log"),
        "error": error,
        "failure": failed.to_dict() if failed else None,
    }


def _fmt(s: dict) -> list[str]:
    def num(v: float | None, f: str) -> str:
        return "-" if v is None else format(v, f)

    eta = "-" if s["eta_s"] is None else time.strftime("%H:%M:%S", time.gmtime(s["eta_s"])) \
        if s["eta_s"] < 86400 else f"{s['eta_s'] / 86400:.1f}d"
    return [s["name"], str(s["job"] or "-"), s["state"], s["layout"], f"{s['step']}/{s['total_steps']}",
            num(s["train_loss"], ".4f"), num(s["val_loss"], ".4f"), num(s["hellaswag"], ".4f"),
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
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.status", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", default=["log"], help="run directories, or folders holding them")
    p.add_argument("--watch", type=float, nargs="?", const=10.0, help="refresh every N seconds (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    args = p.parse_args(argv)
    while True:
        statuses = [run_status(r) for r in find_runs(args.paths)]
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
