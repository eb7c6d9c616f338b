"""The training loop.

    python -m harness.train experiments/shakespeare.py [--optim.lr 1e-3 ...]
    torchrun --nproc-per-node 8 -m harness.train experiments/fineweb_10b.py
    python -m harness.train log/fineweb_10b            # continue a run from its directory

On start the trainer resumes from the newest valid checkpoint in the run directory by itself. On
SIGUSR2/SIGTERM (preemption, time limit, requeue) all ranks agree, save one checkpoint, and exit 0.
"""

import contextlib
import dataclasses
import json
import math
import os
import resource
import socket
import sys
import time
import traceback
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel as DDP

from harness import config, distributed
from harness.atomic import replace_text
from harness.auto_batch import choose_micro_batch
from harness.checkpoint import (
    Checkpointer,
    CheckpointLayoutError,
    list_checkpoints,
    load_latest,
    rng_state,
    set_rng_state,
)
from harness.config import Experiment, SpecError
from harness.data import DataError, ShardedTokenReader, load_manifest
from harness.eval.hellaswag import HellaSwagDataError, cached_examples, evaluate_hellaswag
from harness.eval.val_loss import val_loss
from harness.generate import sample
from harness.metrics import MetricsLog, history, read_metrics, start_wandb
from harness.model import GPT, autocast, model_flops_utilisation, peak_flops
from harness.optim import build_optimizer, lr_at, set_lr
from harness.preempt import StopRequest


class NonFiniteError(RuntimeError):
    """The loss or gradient norm became NaN/inf."""


class Trainer:
    def __init__(self, exp: Experiment, env: distributed.DistEnv, stop: StopRequest):
        self.env, self.stop, self.device = env, stop, env.device
        config.validate(exp, env.world_size)
        self.autocast = autocast(self.device, exp.train.dtype)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast use TF32
            torch.backends.cudnn.allow_tf32 = True

        # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
        torch.manual_seed(exp.seed)
        self.model = GPT(exp.model).to(self.device)
        if exp.train.micro_batch == "auto":
            exp = self._resolve_micro_batch(exp)
        self.exp, tc = exp, exp.train
        self.run_dir = Path(exp.run_dir)
        self.spec_changes = distributed.on_main(lambda: config.init_run_dir(exp), env)
        self.accum = tc.batch_tokens // (tc.micro_batch * tc.seq_len * env.world_size)
        self.optimizer = build_optimizer(self.model, exp.optim, self.device.type)
        reader_args = dict(batch_size=tc.micro_batch, seq_len=tc.seq_len, rank=env.rank,
                           world_size=env.world_size, device=self.device)
        self.train_data = ShardedTokenReader(exp.data.dir, "train", shuffle=exp.data.shuffle, seed=exp.seed,
                                             **reader_args)
        self.val_data = (ShardedTokenReader(exp.data.dir, "val", shuffle=False, **reader_args)
                         if exp.eval.val_every else None)
        if exp.eval.hellaswag_every:  # missing HellaSwag data fails now, not hours in at the first evaluation
            cached_examples(exp.eval.hellaswag_data or None, exp.eval.hellaswag_limit, env)
        self.step, self.wandb_id, self.resumed_from = 0, None, None
        # Rank 0 reads the earlier starts' rows once, for every rank: the restart number, and how the
        # last start ended.
        self.restart, last_stop = distributed.on_main(lambda: history(self.run_dir / "metrics.jsonl"), env)
        found = load_latest(self.run_dir / "checkpoints", env.rank, env.world_size, exp.data.reshard)
        if found:
            self.resumed_from, state = found
            self._restore(state)
            self._refuse_to_replay_a_divergence(last_stop)
        self.checkpointer = Checkpointer(self.run_dir / "checkpoints", exp.checkpoint, env)
        self.log = None

        # Compile the model, then wrap it in DDP (as build-nanogpt does): DDP's no_sync flag and its
        # gradient hooks stay outside the compiled graph. Evaluation and checkpoints use self.model.
        compiled = torch.compile(self.model) if tc.compile else self.model
        self.ddp = DDP(compiled, device_ids=[env.local_rank] if self.device.type == "cuda" else None) \
            if env.distributed else None
        self.train_module = self.ddp or compiled
        self.hosts = distributed.gather(socket.gethostname(), env)
        self.flops_per_token = self.model.flops_per_token(tc.seq_len)
        self.peak_flops = peak_flops(self.device, tc.peak_tflops)
        self.first_bad_step = torch.full((), -1, device=self.device)  # first step with a non-finite norm
        self.last = {}  # the latest logged values, for checkpoints and the summary

    def print(self, msg: str) -> None:
        if self.env.is_main:
            print(msg, flush=True)

    def _resolve_micro_batch(self, exp: Experiment) -> Experiment:
        """A resumed run reuses the size its config.json recorded; a new run probes the GPU."""
        chosen = None
        if (Path(exp.run_dir) / "config.json").exists():
            stored = config.load_run_spec(exp.run_dir).train.micro_batch
            if stored != "auto":
                candidate = dataclasses.replace(exp, train=dataclasses.replace(exp.train, micro_batch=stored))
                try:
                    config.validate(candidate, self.env.world_size, check_data=False)
                    chosen = stored
                except SpecError:
                    pass  # the batch or world size changed since: probe again
        if chosen is None:
            tc = exp.train
            chosen = choose_micro_batch(self.model, tc.batch_tokens, exp.eval.val_tokens if exp.eval.val_every
                                        else tc.batch_tokens, tc.seq_len, self.env, self.autocast)
        exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, micro_batch=chosen))
        config.validate(exp, self.env.world_size)
        return exp

    def _restore(self, state: dict) -> None:
        meta = state["meta"]
        saved = config.from_json(json.dumps(meta["spec"]), f"checkpoint step {meta['step']}")
        # What changed since this checkpoint was written: harness.submit may already have rewritten
        # config.json, so the run directory's copy cannot tell the start event what changed.
        self.spec_changes = config.diff(saved, self.exp)
        changes = config.breaking_changes(self.spec_changes)
        if changes:
            raise SpecError(f"checkpoint step {meta['step']} was written by a different spec: "
                            f"{config.describe(changes)}; use another run_dir to start a new run")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])
        self.train_data.load_state_dict(state["rank"]["train_reader"], reshard=self.exp.data.reshard)
        set_rng_state(state["rank"]["rng"], self.device)
        self.step = meta["step"]

    def _refuse_to_replay_a_divergence(self, last_stop: dict | None) -> None:
        """Resuming is exact, so a run that diverged would diverge again at the same step: a restart
        (by torchrun, by a requeue, by hand) with an unchanged spec is refused at once instead of
        retraining up to the same NaN max_restarts times."""
        diverged = last_stop is not None and last_stop["reason"] == "nonfinite"
        if diverged and last_stop.get("spec_hash") == config.spec_hash(self.exp):
            raise SpecError(f"{self.run_dir} stopped with a non-finite loss or gradient norm at step "
                            f"{last_stop['failed_step']}, and resuming from {self.resumed_from} with the same spec "
                            "would replay it exactly: change the spec (e.g. a lower --optim.lr, "
                            "--optim.grad_clip) or set --train.on_nonfinite skip, then resume")

    # ------------------------------------------------------------------ the loop

    def run(self) -> str:
        exp, total = self.exp, self.exp.schedule.steps
        if self.step >= total:
            self.print(f"{exp.name} already finished ({self.step}/{total} steps)")
            return "finished"
        self._open_log()
        if self.step == 0:
            self.evaluate(0)
        self.timer = (time.time(), 0)
        while self.step < total:
            loss, norm, lr = self.train_step()
            self.step += 1
            self.timer = (self.timer[0], self.timer[1] + 1)
            done = self.step == total
            if self.step % exp.log.every == 0 or done:
                self.log_step(loss, norm, lr)
            if done or self._due(exp.eval.val_every) or self._due(exp.eval.hellaswag_every) \
                    or self._due(exp.eval.sample_every):
                self.evaluate(self.step)
            if done or self.checkpointer.due(self.step):
                self.save()
            if not done and self.step % exp.train.stop_check_every == 0 and self.agree_on_stop():
                if not self.checkpointer.due(self.step):  # else this step was saved just above
                    self.save()
                self.checkpointer.finish()
                self._stop("preempted", signal=self.stop.signal)
                return "preempted"
        self.checkpointer.finish()
        self.write_summary()
        self._stop("finished")
        return "finished"

    def _open_log(self) -> None:
        if not self.env.is_main:
            return
        exp, tc, path = self.exp, self.exp.train, self.run_dir / "metrics.jsonl"
        self.log = MetricsLog(path, restart=self.restart)
        self.wandb_id = start_wandb(self.log, exp.log, self.run_dir, exp.name, config.flatten(exp))
        device = _device_name(self.device)
        self.log.write("start", step=self.step, world_size=self.env.world_size, device=device,
                       hosts=self.hosts, job_id=os.environ.get("SLURM_JOB_ID"),
                       checkpoint=str(self.resumed_from) if self.resumed_from else None,
                       spec_changes=config.describe(self.spec_changes) or None)
        what = f"resumed from {self.resumed_from}" if self.resumed_from else "starting from scratch"
        self.print(f"{exp.name}: {what} at step {self.step}/{exp.schedule.steps} (restart {self.log.restart}); "
                   f"{self.env.world_size} x {device}, {self.accum} micro-steps of {tc.micro_batch}x{tc.seq_len} "
                   f"per step, {tc.batch_tokens:,} tokens/step")
        if self.spec_changes:
            self.print(f"spec changed since the last start: {config.describe(self.spec_changes)}")

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        tc, oc = self.exp.train, self.exp.optim
        lr = lr_at(self.step, oc.lr, self.exp.schedule)
        set_lr(self.optimizer, lr)
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.accum):
            x, y = self.train_data.next_batch()
            # Gradients are all-reduced only on the last micro-step; before that they accumulate locally.
            sync = self.ddp is None or micro == self.accum - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                with self.autocast:
                    _, loss = self.train_module(x, y)
                # Each micro-batch loss is a mean over its tokens: dividing by the number of micro-steps
                # makes the accumulated gradient that of the mean over the whole batch, not a sum.
                loss = loss / self.accum
                loss.backward()
            loss_sum += loss.detach()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), oc.grad_clip or math.inf)
        # The norm is of the all-reduced gradients, the same on every rank: no extra collective needed.
        bad = ~torch.isfinite(norm)
        if tc.on_nonfinite == "skip" and bad.item():  # reading it syncs the device: only for "skip"
            self.print(f"step {self.step + 1}: non-finite gradient norm, update skipped")
            self.optimizer.zero_grad(set_to_none=True)
            return loss_sum, norm, lr
        self.first_bad_step = torch.where(bad & (self.first_bad_step < 0), self.step + 1, self.first_bad_step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, norm, lr

    def check_finite(self, loss: float | None = None) -> None:
        bad = int(self.first_bad_step.item())
        if bad >= 0 or (loss is not None and not math.isfinite(loss)):
            at = bad if bad >= 0 else self.step
            good = list_checkpoints(self.run_dir / "checkpoints")
            last = str(good[-1]) if good else "none"
            self._stop("nonfinite", failed_step=at, spec_hash=config.spec_hash(self.exp))
            raise NonFiniteError(f"non-finite loss or gradient norm at step {at}; last good checkpoint: {last} "
                                 "(lower optim.lr, or set train.on_nonfinite=skip, then resume)")

    def log_step(self, loss: torch.Tensor, norm: torch.Tensor, lr: float) -> None:
        loss_v = distributed.all_reduce_mean(loss.clone(), self.env).item()  # syncs the device
        norm_v = norm.item()
        if self.exp.train.on_nonfinite == "stop":
            self.check_finite(loss_v)
        start, steps = self.timer
        dt = (time.time() - start) / max(1, steps)
        self.timer = (time.time(), 0)
        tokens_per_s = self.exp.train.batch_tokens / dt
        mfu = model_flops_utilisation(self.flops_per_token, tokens_per_s, self.peak_flops, self.env.world_size)
        self.last.update(train_loss=loss_v)
        if self.log:
            self.log.write("train", step=self.step, tokens=self.step * self.exp.train.batch_tokens,
                           loss=_finite_or_none(loss_v), lr=lr, grad_norm=_finite_or_none(norm_v), step_time=dt,
                           tokens_per_s=tokens_per_s, mfu=mfu,
                           peak_mem_gb=_peak_memory_gb(self.device))
            mfu_s = f" | mfu {mfu:.1%}" if mfu is not None else ""
            self.print(f"step {self.step:6d}/{self.exp.schedule.steps} | loss {loss_v:.4f} | lr {lr:.2e} | "
                       f"norm {norm_v:.3f} | {dt * 1000:.0f} ms | {tokens_per_s:,.0f} tok/s{mfu_s}")

    def evaluate(self, step: int) -> None:
        """Val loss, HellaSwag and a sample, each when due; all on the plain (uncompiled) module."""
        ev, done = self.exp.eval, step == self.exp.schedule.steps
        first = step == 0
        if self.val_data is not None and (first or done or self._due(ev.val_every)):
            loss = val_loss(self.model, self.val_data, ev.val_tokens, self.env, self.autocast)
            self.last.update(val_loss=loss)
            if self.log:
                self.log.write("val", step=step, tokens=step * self.exp.train.batch_tokens, loss=loss,
                               val_tokens=ev.val_tokens)
                self.print(f"step {step:6d} | val loss {loss:.4f}")
        if ev.hellaswag_every and (done or self._due(ev.hellaswag_every)):
            result = evaluate_hellaswag(self.model, ev.hellaswag_data or None, ev.hellaswag_limit, self.env,
                                        self.autocast)
            self.last.update(hellaswag_acc_norm=result["acc_norm"])
            if self.log:
                self.log.write("hellaswag", step=step, tokens=step * self.exp.train.batch_tokens, **result)
                self.print(f"step {step:6d} | hellaswag acc_norm {result['acc_norm']:.4f} (n={result['n']})")
        if self.env.is_main and ev.sample_every and (done or self._due(ev.sample_every)):
            # Its own generator: sampling must not move the training run's random streams.
            gen = torch.Generator().manual_seed(self.exp.seed + step)
            self.model.eval()
            text = sample(self.model, ev.sample_prompt, ev.sample_tokens, generator=gen)[0]
            self.model.train()
            self.log.write("sample", step=step, text=text)
            self.print(f"step {step:6d} | sample: {text!r}")
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.timer = (time.time(), 0)  # evaluation time is not training time

    def save(self) -> None:
        self.check_finite()  # never let a NaN checkpoint replace a good one
        t0 = time.time()
        if hasattr(self.optimizer, "consolidate_state_dict"):  # ZeRO-1: gather the shards on rank 0
            self.optimizer.consolidate_state_dict(to=0)
        main = self.env.is_main
        meta = {"spec": config.to_dict(self.exp), "spec_fingerprint": config.fingerprint(self.exp),
                "data_fingerprint": self.train_data.fingerprint, "wandb_id": self.wandb_id,
                "tokens": self.step * self.exp.train.batch_tokens, **self.last}
        self.checkpointer.save(
            self.step,
            self.model.state_dict() if main else None,
            self.optimizer.state_dict() if main else None,
            {"rng": rng_state(self.device), "train_reader": self.train_data.state_dict()},
            meta,
        )
        if self.log:
            self.log.write("checkpoint", step=self.step, seconds=round(time.time() - t0, 3),
                           path=str(self.run_dir / "checkpoints" / f"step_{self.step:08d}"),
                           background=self.exp.checkpoint.async_save)
            self.log.sync()
        self.timer = (time.time(), 0)

    def agree_on_stop(self) -> bool:
        """Every few steps the ranks share their view of signals (and of background saves)."""
        stop, writing = distributed.any_ranks([self.stop.requested, self.checkpointer.writing()], self.env)
        if self.checkpointer.pending() and not writing:
            self.checkpointer.finish()
        return stop

    def _stop(self, reason: str, **fields: object) -> None:
        if self.log:
            self.log.write("stop", step=self.step, reason=reason, **fields)
            self.log.sync()
        self.print(f"{self.exp.name}: stopped at step {self.step} ({reason})")

    def write_summary(self) -> None:
        if not self.env.is_main:
            return
        manifest = load_manifest(self.exp.data.dir)
        rows = read_metrics(self.run_dir / "metrics.jsonl")
        starts = [r for r in rows if r["kind"] == "start"]
        tc = self.exp.train
        summary = {
            "name": self.exp.name,
            "parameters": self.model.num_params(),
            "parameters_non_embedding": self.model.num_params(non_embedding=True),
            "dataset": {s: manifest["splits"][s]["tokens"] for s in manifest["splits"]},
            "tokens_trained": self.step * tc.batch_tokens,
            "global_batch_tokens": tc.batch_tokens,
            "steps": self.step,
            "context_length": tc.seq_len,
            "final_train_loss": self.last.get("train_loss"),
            "final_val_loss": self.last.get("val_loss"),
            "final_hellaswag_acc_norm": self.last.get("hellaswag_acc_norm"),
            "wall_seconds": round(time.time() - starts[0]["time"], 1) if starts else None,
            "restarts": len(starts) - 1,
            "devices": f"{self.env.world_size} x {_device_name(self.device)}",
        }
        replace_text(self.run_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
        self.print("summary: " + ", ".join(f"{k}={v}" for k, v in summary.items()))

    def record_error(self, e: BaseException) -> None:
        """Every failing rank leaves its error in errors.jsonl, where harness.status shows it."""
        entry = {"time": round(time.time(), 3), "rank": self.env.rank, "host": socket.gethostname(),
                 "step": self.step, "error": f"{type(e).__name__}: {e}",
                 "traceback": traceback.format_exc(limit=-8)}
        with open(self.run_dir / "errors.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        if self.log and not isinstance(e, NonFiniteError):  # that one wrote its own stop row
            self._stop("failed", error=entry["error"])

    def close(self) -> None:
        if self.log:
            self.log.close()
        # Drop DDP before the process group goes (see distributed.teardown).
        self.ddp = self.train_module = None


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no NaN; null keeps metrics.jsonl strict JSON


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # peak resident memory (KiB)


@record  # under torchrun, the first failing rank's traceback heads the job's error report
def main(argv: list[str] | None = None) -> str:
    stop = StopRequest()  # first: a preemption signal during start-up must not kill the process
    try:
        (exp,) = config.parse_cli(sys.argv[1:] if argv is None else argv, "python -m harness.train")
        env = distributed.setup(exp.train.device, exp.train.backend, exp.train.collective_timeout_min)
        trainer = Trainer(exp, env, stop)
    except (SpecError, DataError, HellaSwagDataError, CheckpointLayoutError) as e:
        sys.exit(f"error: {e}")  # bad input: a clear message, not a traceback
    # An exception below propagates without teardown: waiting in a barrier for a failed rank would hang.
    try:
        outcome = trainer.run()
    except BaseException as e:
        trainer.record_error(e)
        raise
    trainer.close()
    del trainer
    distributed.teardown(env)
    return outcome


if __name__ == "__main__":
    main()
