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
import sys
import time
from pathlib import Path

from harness.metrics import read_metrics

COLUMNS = ["name", "job", "state", "layout", "step", "train_loss", "val_loss", "hellaswag", "tok/s", "eta",
           "restarts", "checkpoint", "log"]


def find_runs(paths: list[str]) -> list[Path]:
    runs = []
    for p in map(Path, paths):
        if (p / "config.json").exists():
            runs.append(p)
        elif p.is_dir():
            runs += sorted(c.parent for c in p.glob("*/config.json"))
            runs += sorted(c.parent for c in p.glob("*/*/config.json"))
        else:
            print(f"warning: {p} is not a run directory", file=sys.stderr)
    return runs


def last_job(run_dir: Path) -> dict | None:
    """The newest job recorded in the run's jobs.jsonl (by harness.submit or sbatch/train.sh)."""
    path = run_dir / "jobs.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return None


def queue_state(job_id: str) -> str | None:
    """The job's state while squeue lists it (pending, running, ...); None once it left the queue."""
    if shutil.which("squeue"):
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    return None


def slurm_state(job_id: str) -> str | None:
    """The job's state from squeue, or from sacct once it left the queue (if accounting exists)."""
    if state := queue_state(job_id):
        return state
    if shutil.which("sacct"):
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                             text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[-1].split()[0]
    return None


RUNNING_WINDOW_S = 300  # a run that wrote metrics this recently and never stopped is taken to be running


def run_state(rows: list[dict], now: float | None = None) -> str:
    """From the metrics alone: finished, preempted, failed or failed (non-finite) from the last stop
    row unless a start came after it; else running (rows in the last 5 minutes), interrupted (ended
    without a stop row: killed, or its node died), or new."""
    if not rows:
        return "new"
    starts = [r["time"] for r in rows if r["kind"] == "start"]
    stops = [r for r in rows if r["kind"] == "stop"]
    if stops and (not starts or max(starts) <= stops[-1]["time"]):
        return {"finished": "finished", "preempted": "preempted", "nonfinite": "failed (non-finite loss)"}.get(
            stops[-1]["reason"], "failed")
    now = time.time() if now is None else now
    return "running" if now - max(r["time"] for r in rows) < RUNNING_WINDOW_S else "interrupted"


def run_status(run_dir: Path) -> dict:
    spec = json.loads((run_dir / "config.json").read_text())
    rows = read_metrics(run_dir / "metrics.jsonl")
    last = {r["kind"]: r for r in rows}  # the newest row of each kind
    total = spec["schedule"]["steps"]
    step = max((r["step"] for r in rows if r["kind"] in ("train", "checkpoint")), default=0)
    job = last_job(run_dir) or {}
    queue = slurm_state(str(job["job_id"])) if job else None
    state = queue or run_state(rows).upper()
    error = None
    if state.startswith(("FAILED", "INTERRUPTED")) and (run_dir / "errors.jsonl").exists():
        error = json.loads((run_dir / "errors.jsonl").read_text().splitlines()[-1])["error"]

    recent = [r for r in rows if r["kind"] == "train"][-20:]
    tok_s = statistics.median(r["tokens_per_s"] for r in recent) if recent else None
    eta = None
    if tok_s and step < total and not state.startswith(("FINISHED", "FAILED")):
        eta = (total - step) * spec["train"]["batch_tokens"] / tok_s
    ckpts = sorted((run_dir / "checkpoints").glob("step_*")) if (run_dir / "checkpoints").exists() else []
    cl = spec["cluster"]
    return {
        "name": spec["name"],
        "run_dir": str(run_dir),
        "job": job.get("job_id"),
        "state": state,
        "layout": f"{job.get('nodes', cl['nodes'])}x{job.get('gpus_per_node', cl['gpus_per_node'])}",
        "step": step,
        "total_steps": total,
        "train_loss": last.get("train", {}).get("loss"),
        "val_loss": last.get("val", {}).get("loss"),
        "hellaswag": last.get("hellaswag", {}).get("acc_norm"),
        "tokens_per_s": tok_s,
        "eta_s": eta,
        "restarts": max(0, sum(r["kind"] == "start" for r in rows) - 1),
        "checkpoint": int(ckpts[-1].name.split("_")[1]) if ckpts else None,
        "log": job.get("log"),
        "error": error,
    }


def _fmt(s: dict) -> list[str]:
    def num(v: float | None, f: str) -> str:
        return "-" if v is None else format(v, f)

    eta = "-" if s["eta_s"] is None else time.strftime("%H:%M:%S", time.gmtime(s["eta_s"])) \
        if s["eta_s"] < 86400 else f"{s['eta_s'] / 86400:.1f}d"
    return [s["name"], str(s["job"] or "-"), s["state"], s["layout"], f"{s['step']}/{s['total_steps']}",
            num(s["train_loss"], ".4f"), num(s["val_loss"], ".4f"), num(s["hellaswag"], ".4f"),
            num(s["tokens_per_s"], ",.0f"), eta, str(s["restarts"]),
            str(s["checkpoint"] if s["checkpoint"] is not None else "-"), s["log"] or s["run_dir"]]


def table(statuses: list[dict]) -> str:
    cells = [COLUMNS] + [_fmt(s) for s in statuses]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    for s in statuses:
        if s["error"]:
            lines.append(f"{s['name']}: {s['error']}")
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
