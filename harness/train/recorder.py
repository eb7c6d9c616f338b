"""The trainer's records: the start row, metrics.jsonl (rows of harness.records, append-only across restarts, rank 0
only), its wandb mirror, each failing rank's error, and the run summary at every stop."""

import os
import sys
import traceback
from typing import Any

import torch

from harness import distributed, records
from harness.cluster.slurm import allocation_started, node_name
from harness.records import Row, Start, Stop
from harness.run_dir import JsonlAppender, RunDir
from harness.spec import LogConfig, describe, flatten
from harness.train.component import Component

WANDB_KINDS = ("train", "val", "eval")  # the rows mirrored to wandb, as "kind/field" (an eval's "eval/task/field")


class Recorder(Component):
    """Writes the run's rows as they happen (rank 0); the other ranks' writes are no-ops."""

    def __init__(self, run: RunDir, cfg: LogConfig, is_main: bool, restart: int):
        self.run, self.cfg, self.restart = run, cfg, restart
        self.out = JsonlAppender(run.metrics) if is_main else None
        self.wandb: Any = None
        self.wandb_id: str | None = None
        self.started = False  # a start row written: a stop row may follow

    def write(self, row: Row) -> None:
        if self.out is None:
            return
        self.started = self.started or row.kind == "start"
        self.out.write(records.as_dict(row, self.restart))
        if self.wandb is not None and row.kind in WANDB_KINDS:
            prefix = f"eval/{row.task}" if row.kind == "eval" else row.kind
            values = {f"{prefix}/{k}": v for k, v in vars(row).items()
                      if isinstance(v, int | float) and not isinstance(v, bool) and k != "step"}
            self.wandb.log(values, step=row.step)

    def take_over(self, declares: bool) -> None:
        """After a hang, the rank that declared it writes the stop row (rank 0 may be the one that hung: its
        records stop there, and the declarer's stop row ends the start)."""
        if declares and self.out is None:
            self.out, self.started = JsonlAppender(self.run.metrics), True

    def sync(self) -> None:
        """Make the rows durable (at checkpoints: the metrics then cover at least what was saved)."""
        if self.out is not None:
            self.out.sync()

    def start_wandb(self, name: str, spec: object) -> None:
        """Start (or continue, after a requeue) the run's wandb run, whose id the run directory keeps."""
        if self.out is None:
            return
        self.wandb_id = self.run.wandb_id()
        mode = os.environ.get("WANDB_MODE", self.cfg.wandb)
        if mode == "disabled":
            return
        import wandb  # slow to import; only a run that mirrors to it pays

        try:
            self.wandb = wandb.init(project=self.cfg.wandb_project, entity=self.cfg.wandb_entity or None, name=name,
                                    id=self.wandb_id, resume="allow", dir=str(self.run.path), mode=mode,
                                    config=flatten(spec))
        except Exception as e:  # wandb is a mirror; the run must not die because it is unreachable
            print(f"WARNING: wandb ({mode}) did not start: {e}; metrics.jsonl is still written", file=sys.stderr)

    def on_start(self, t: Any) -> Stop | None:
        """The start row, which every record of this start follows."""
        exp, tc = t.exp, t.exp.train
        self.start_wandb(exp.name, exp)
        device = device_name(t.device)
        names = [kv.split("=", 1)[0] for kv in exp.cluster.env]  # the spec's cluster.env as each node sees it
        node_env = distributed.gather({n: os.environ.get(n) for n in names}, t.env) if names else None
        allocated = allocation_started()
        self.write(Start(
            step=t.state.step, world_size=t.env.world_size, device=device, hosts=t.hosts,
            job_id=os.environ.get("SLURM_JOB_ID"), allocated_at=allocated, startup=t.clock.breakdown(allocated),
            checkpoint=str(t.resumed_from) if t.resumed_from else None,
            init_from=None if t.resumed_from else exp.model.init_from or None,  # weights loaded from it
            parameters=t.model.num_params(), parameters_non_embedding=t.model.num_params(non_embedding=True),
            flops_per_token=t.flops_per_token, total_steps=exp.schedule.steps, batch_tokens=tc.batch_tokens,
            lr_scaling=exp.optim.lr_scaling, peak_lr=exp.optim.scaled_lr, min_lr=exp.optim.scaled_min_lr,
            node_env=dict(zip(t.hosts, node_env, strict=True)) if node_env else None,
            checkpoint_plan=t.interval, auto_micro_batch=t.auto_batch,
            spec_changes=describe(t.spec_changes) or None, filled=t.filled or None,
            commit=records.code_version(), branched_from=t.branched))
        what = f"branched from {t.resumed_from}" if t.branched else \
            f"resumed from {t.resumed_from}" if t.resumed_from else \
            f"starting from {exp.model.init_from}" if exp.model.init_from else "starting from scratch"
        t.print(f"{exp.name}: {what} at step {t.state.step}/{exp.schedule.steps} (restart {t.restart}); "
                f"{t.env.world_size} x {device}, {t.accum} micro-steps of {tc.micro_batch}x{tc.seq_len} per step, "
                f"{tc.batch_tokens:,} tokens/step")
        if exp.optim.lr_scaling != "none":
            t.print(f"lr_scaling={exp.optim.lr_scaling} from {exp.optim.base_batch_tokens:,} to {tc.batch_tokens:,} "
                    f"tokens/step: peak lr {exp.optim.scaled_lr:.3g}, min lr {exp.optim.scaled_min_lr:.3g}")
        for field, value in t.filled.items():
            t.print(f"{field}={value}: filled in from model.init_from={exp.model.init_from}")
        if t.branched and t.branched["changes"]:
            t.print(f"the branch differs from {t.branched['run']} in: {t.branched['changes']}")
        if t.spec_changes:
            t.print(f"spec changed since the last start: {describe(t.spec_changes)}")
        return None

    def on_stop(self, t: Any, stop: Stop) -> None:
        """The stop row, durably, and the run's summary derived from its records. (A start that failed before
        its start row leaves its error in errors.jsonl alone.)"""
        if self.out is None or not self.started:
            return
        self.write(stop)
        self.sync()
        summary = records.refresh_summary(self.run)
        shown = {"steps": summary.steps, "tokens": summary.tokens, "train_loss": summary.train_loss,
                 "val_loss": summary.val_loss, **{k: v["headline"] for k, v in summary.evals.items()},
                 "goodput": f"{summary.goodput:.1%}" if summary.goodput is not None else None}
        print("summary: " + ", ".join(f"{k}={v}" for k, v in shown.items()) + f" ({self.run.summary})", flush=True)

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None

    def state_dict(self) -> dict:
        return {"wandb_id": self.wandb_id}


def record_error(run: RunDir, e: BaseException, step: int | None) -> str:
    """Every failing rank leaves its error in the run's error records, where harness.status shows it."""
    error = f"{type(e).__name__}: {e}"
    run.record_error(rank=int(os.environ.get("RANK", 0)), host=node_name(), step=step, error=error,
                     traceback=traceback.format_exc(limit=-8))
    return error


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
