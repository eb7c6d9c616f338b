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
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import simple_parsing
import torch
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel as DDP

from harness import config, distributed
from harness.auto_batch import choose_micro_batch
from harness.checkpoint import Checkpointer, CheckpointLayoutError, load_latest, plan, rng_state, set_rng_state
from harness.cluster import allocation_started
from harness.config import Experiment, SpecError
from harness.data import DataError, ShardedTokenReader, load_manifest
from harness.eval.hellaswag import HellaSwagDataError, cached_examples, evaluate_hellaswag
from harness.eval.val_loss import val_loss
from harness.generate import sample
from harness.health import StragglerWatch, node_name, preflight, straggler, verdicts
from harness.health import table as health_table
from harness.ledger import ledger
from harness.metrics import MetricsLog, start_wandb
from harness.model import GPT, autocast, model_flops_utilisation, peak_flops
from harness.nonfinite import NonFiniteError, NonFiniteGuard, refuse_to_replay
from harness.optim import build_optimizer, lr_at, set_lr
from harness.preempt import StopRequest
from harness.pretrained import load_pretrained
from harness.run_dir import RunDir, read_jsonl

EXCLUSION_TRIES = 3  # starts on a node the run had moved off, before the job gives up on Slurm excluding it


@dataclasses.dataclass
class TrainState:
    """What a checkpoint resumes (lingua's TrainState); everything else is rebuilt from the spec.

    The step, the wandb run and the latest logged values are the same on every rank; the reader
    position and the random streams are each rank's own."""

    step: int = 0
    wandb_id: str | None = None
    last: dict[str, float] = dataclasses.field(default_factory=dict)  # latest train/val loss, HellaSwag
    reader: dict | None = None  # this rank's train reader position (ShardedTokenReader.state_dict)
    rng: dict | None = None  # this rank's random streams (python, numpy, torch, CUDA)

    def shared(self) -> dict:
        return {"step": self.step, "wandb_id": self.wandb_id, "last": self.last}

    def own(self) -> dict:
        return {"train_reader": self.reader, "rng": self.rng}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "TrainState":
        meta, own = ckpt["meta"], ckpt["rank"]
        return cls(meta["step"], meta.get("wandb_id"), meta.get("last", {}), own["train_reader"], own["rng"])


class StepTimer:
    """The wall seconds of the training steps since the last reading (paused for evaluations and
    checkpoints, which have their own), and this rank's own forward-pass seconds, which no other rank
    can slow down (a forward pass does not communicate), for naming stragglers. On a GPU the forward
    passes are timed by CUDA events, read at the next host sync; steps that do not log never wait."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.reset()

    def reset(self) -> None:
        self.start, self.seconds, self.running = time.time(), 0.0, True
        self.steps, self.forward, self.events = 0, 0.0, []

    def pause(self) -> None:
        if self.running:
            self.seconds += time.time() - self.start
            self.running = False

    def resume(self) -> None:
        self.start, self.running = time.time(), True

    @contextlib.contextmanager
    def forward_pass(self) -> Iterator[None]:
        if self.cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            yield
            end.record()
            self.events.append((begin, end))
        else:
            t0 = time.perf_counter()
            yield
            self.forward += time.perf_counter() - t0

    def tick(self) -> None:
        self.steps += 1

    def read(self) -> tuple[float, int, float]:
        """(wall seconds, steps, forward seconds) since the last reading; after a device sync."""
        self.pause()
        out = (self.seconds, self.steps, self.forward + sum(a.elapsed_time(b) for a, b in self.events) / 1e3)
        self.reset()
        return out


class Trainer:
    def __init__(self, exp: Experiment, env: distributed.DistEnv, stop: StopRequest):
        """Build everything the spec describes, then restore the newest checkpoint that loads."""
        self.env, self.stop, self.device = env, stop, env.device
        exp = config.resolve(exp)  # a spec built in Python, too, runs the derived learning rates
        config.validate(exp, env.world_size)
        if exp.train.deterministic:
            # GPU kernels that reduce with atomics (embedding backward, some attention backward passes)
            # sum in a different order every run; exact resume on a GPU needs the deterministic ones,
            # and cuBLAS a fixed workspace for them.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        self.autocast = autocast(self.device, exp.train.dtype)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast use TF32
            torch.backends.cudnn.allow_tf32 = True

        # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
        torch.manual_seed(exp.seed)
        self.model = GPT(exp.model).to(self.device)
        self.run_dir = RunDir(exp.run_dir)
        self.auto_batch: dict | None = None  # what micro_batch="auto" chose, and from what (the start row)
        if exp.train.micro_batch == "auto":
            exp = self._resolve_micro_batch(exp)
        self.exp, tc = exp, exp.train
        self.spec_changes = distributed.on_main(lambda: self.run_dir.init(exp), env)
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
        self.checkpointer = Checkpointer(self.run_dir.checkpoints, exp.checkpoint, env)
        self.guard = NonFiniteGuard(tc.on_nonfinite, self.device, self.run_dir)
        self.timer = StepTimer(self.device)
        self.stragglers = StragglerWatch(exp.cluster.straggler_ratio, exp.cluster.straggler_steps)
        self.leave: str | None = None  # a straggler to move off, once the watch says so
        self.log: MetricsLog | None = None

        self.state = TrainState()
        # Rank 0 reads the earlier starts' records once, for every rank: the restart number, how the
        # last start ended, and how often to save by time.
        self.restart, last_stop = distributed.on_main(self.run_dir.history, env)
        self.save_plan = distributed.on_main(
            lambda: plan(exp.checkpoint, self.run_dir.metrics_rows(), read_jsonl(self.run_dir.jobs)), env)
        self.last_save = time.time()
        self.resumed_from = self.restore()
        if self.resumed_from:
            refuse_to_replay(last_stop, config.spec_hash(exp), self.run_dir, self.resumed_from)

        # The module that trains: the model compiled, then wrapped in DDP (as build-nanogpt does), so
        # that DDP's no_sync flag and gradient hooks stay outside the compiled graph. Evaluation,
        # sampling and checkpoints use the plain self.model, which shares its parameters.
        compiled = torch.compile(self.model) if tc.compile else self.model
        self.trained = DDP(compiled, device_ids=[env.local_rank] if self.device.type == "cuda" else None) \
            if env.distributed else compiled
        self.hosts = distributed.gather(node_name(), env)
        # The spec's cluster.env as each node sees it: set-up that did not reach a node shows here.
        names = [kv.split("=", 1)[0] for kv in exp.cluster.env]
        self.node_env = dict(zip(self.hosts, distributed.gather({n: os.environ.get(n) for n in names}, env),
                                 strict=True)) if names else None
        self.flops_per_token = self.model.flops_per_token(tc.seq_len)
        self.peak_flops = peak_flops(self.device, tc.peak_tflops)

    def print(self, msg: str) -> None:
        if self.env.is_main:
            print(msg, flush=True)

    def _resolve_micro_batch(self, exp: Experiment) -> Experiment:
        """A resumed run reuses the size its spec recorded; a new run probes the GPU."""
        chosen = None
        if self.run_dir.exists():
            stored = self.run_dir.read_spec().train.micro_batch
            if stored != "auto":
                try:
                    config.validate(simple_parsing.replace(exp, {"train.micro_batch": stored}), self.env.world_size,
                                    check_data=False)
                    chosen = stored
                    self.auto_batch = {"micro_batch": stored, "from": str(self.run_dir.config)}
                except SpecError:
                    pass  # the batch or world size changed since: probe again
        if chosen is None:
            tc = exp.train
            chosen, self.auto_batch = choose_micro_batch(
                self.model, tc.batch_tokens, exp.eval.val_tokens if exp.eval.val_every else tc.batch_tokens,
                tc.seq_len, self.env, self.autocast, tc.memory_fraction, tc.max_micro_batch)
        exp = simple_parsing.replace(exp, {"train.micro_batch": chosen})
        config.validate(exp, self.env.world_size)
        return exp

    # ------------------------------------------------------------------ state <-> checkpoint

    def restore(self) -> Path | None:
        """checkpoint -> state: the newest checkpoint that loads, into the model, the optimizer, this
        rank's reader and random streams. Returns its path (None: a fresh start)."""
        found = load_latest(self.run_dir.checkpoints, self.env.rank, self.env.world_size, self.exp.data.reshard)
        if found is None:
            if self.exp.model.init_from:  # a finetune's first start: only the weights; optimizer and data afresh
                load_pretrained(self.model)
            return None
        path, ckpt = found
        saved = config.from_json(json.dumps(ckpt["meta"]["spec"]), str(path))
        # What changed since this checkpoint was written: harness.submit may already have rewritten the
        # run's spec file, so only the checkpoint's copy can tell the start event what changed.
        self.spec_changes = config.diff(saved, self.exp)
        if breaking := config.breaking_changes(self.spec_changes):
            raise SpecError(f"{path} was written by a different spec: {config.describe(breaking)}; use another "
                            "run_dir to start a new run")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optim"])
        self.state = TrainState.from_checkpoint(ckpt)
        self.train_data.load_state_dict(self.state.reader, reshard=self.exp.data.reshard)
        set_rng_state(self.state.rng, self.device)
        return path

    def save(self) -> None:
        """state -> checkpoint; every rank calls it together."""
        self.guard.check(self.state.step)  # never let a NaN checkpoint replace a good one
        self.timer.pause()
        t0 = time.time()
        if hasattr(self.optimizer, "consolidate_state_dict"):  # ZeRO-1: gather the shards on rank 0
            self.optimizer.consolidate_state_dict(to=0)
        self.state.reader, self.state.rng = self.train_data.state_dict(), rng_state(self.device)
        main, step = self.env.is_main, self.state.step
        self.checkpointer.save(step, self.model.state_dict() if main else None,
                               self.optimizer.state_dict() if main else None, self.state.own(),
                               {"spec": config.to_dict(self.exp), **self.state.shared()})
        if self.log:
            self.log.write("checkpoint", step=step, seconds=round(time.time() - t0, 3),
                           path=str(self.checkpointer.path(step)), background=self.exp.checkpoint.async_save)
            self.log.sync()
        self.last_save = time.time()
        self.timer.resume()

    # ------------------------------------------------------------------ the loop

    def run(self) -> str:
        exp, total = self.exp, self.exp.schedule.steps
        if self.state.step >= total:
            self.print(f"{exp.name} already finished ({self.state.step}/{total} steps)")
            return "finished"
        self._open_log()
        if moved := self.check_nodes():
            return moved
        if self.state.step == 0:
            self.evaluate()
        self.timer.reset()
        first = True
        while self.state.step < total:
            loss, norm, lr = self.train_step()
            self.state.step += 1
            self.timer.tick()
            if first:  # the first step of a start (mostly compilation, warm-up) ends the start-up
                self.ready()
                first = False
            step, done = self.state.step, self.state.step == total
            if step % exp.log.every == 0 or done:
                self.log_step(loss, norm, lr)
            if done or any(self._due(every) for every in (exp.eval.val_every, exp.eval.hellaswag_every,
                                                             exp.eval.sample_every)):
                self.evaluate()
            if done or self.checkpointer.due(step):
                self.save()
            if self.leave and not done:  # the same on every rank: decided from the gathered times
                if not self.checkpointer.due(step):
                    self.save()
                return self.move_off([self.leave], "straggler", self.stragglers.evidence)
            if not done and step % exp.train.stop_check_every == 0:
                stop, save_due = self.agree()
                if (stop or save_due) and not self.checkpointer.due(step):  # else it was saved just above
                    self.save()
                if stop:
                    self.checkpointer.finish()
                    self._stop("preempted", signal=self.stop.signal)
                    return "preempted"
        self.checkpointer.finish()
        self.write_summary()
        self._stop("finished")
        return "finished"

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One optimizer step: data, forward and backward over the micro-batches, clip, lr, update."""
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.accum):
            x, y = self.train_data.next_batch()
            # Gradients are all-reduced only on the last micro-step; before that they accumulate locally.
            last = micro == self.accum - 1
            with contextlib.nullcontext() if last or not isinstance(self.trained, DDP) else self.trained.no_sync():
                with self.timer.forward_pass(), self.autocast:
                    _, loss = self.trained(x, y)
                # Each micro-batch loss is a mean over its tokens: dividing by the number of micro-steps
                # makes the accumulated gradient that of the mean over the whole batch, not a sum.
                loss = loss / self.accum
                loss.backward()
            loss_sum += loss.detach()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.exp.optim.grad_clip or math.inf)
        lr = lr_at(self.state.step, self.exp.optim.scaled_lr, self.exp.schedule, self.exp.optim.scaled_min_lr)
        if self.guard.allows_update(norm, self.state.step + 1):
            set_lr(self.optimizer, lr)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, norm, lr

    def log_step(self, loss: torch.Tensor, norm: torch.Tensor, lr: float) -> None:
        step = self.state.step
        loss_v = distributed.all_reduce_mean(loss.clone(), self.env).item()  # syncs the device
        norm_v = norm.item()
        self.guard.check(step, loss_v)
        seconds, steps, forward = self.timer.read()
        slowest = None
        if len(set(self.hosts)) > 1 and steps:  # every rank gets every rank's time, and so decides the same
            slowest = straggler(distributed.gather(forward / steps, self.env), self.hosts)
            self.leave = self.stragglers.update(slowest)
        # A row right after a start's first step covers no timed step: that step was start-up.
        dt = seconds / steps if steps else None
        tokens_per_s = self.exp.train.batch_tokens / dt if dt else None
        mfu = tokens_per_s and model_flops_utilisation(self.flops_per_token, tokens_per_s, self.peak_flops,
                                                       self.env.world_size)
        self.state.last["train_loss"] = loss_v
        if self.log:
            self.log.write("train", step=step, tokens=step * self.exp.train.batch_tokens,
                           loss=_finite_or_none(loss_v), lr=lr, grad_norm=_finite_or_none(norm_v), seconds=seconds,
                           steps=steps, step_time=dt, tokens_per_s=tokens_per_s, mfu=mfu,
                           peak_mem_gb=_peak_memory_gb(self.device), slowest_host=slowest[0] if slowest else None,
                           slowest_ratio=round(slowest[1], 3) if slowest else None)
            speed = f" | {dt * 1000:.0f} ms | {tokens_per_s:,.0f} tok/s" if dt else ""
            mfu_s = f" | mfu {mfu:.1%}" if mfu else ""
            self.print(f"step {step:6d}/{self.exp.schedule.steps} | loss {loss_v:.4f} | lr {lr:.2e} | "
                       f"norm {norm_v:.3f}{speed}{mfu_s}")

    def _due(self, every: int) -> bool:
        return every > 0 and self.state.step % every == 0

    def evaluate(self) -> None:
        """Val loss, HellaSwag and a sample, each when due; all on the plain (uncompiled) module. Each
        row says how long it took: evaluation time is not training time."""
        ev, step = self.exp.eval, self.state.step
        done, tokens = step == self.exp.schedule.steps, step * self.exp.train.batch_tokens
        self.timer.pause()
        t0 = time.time()
        if self.val_data is not None and (step == 0 or done or self._due(ev.val_every)):
            loss = val_loss(self.model, self.val_data, ev.val_tokens, self.env, self.autocast)
            self.state.last["val_loss"] = loss
            if self.log:
                self.log.write("val", step=step, tokens=tokens, loss=loss, val_tokens=ev.val_tokens,
                               seconds=round(time.time() - t0, 3))
                self.print(f"step {step:6d} | val loss {loss:.4f}")
        t0 = time.time()
        if ev.hellaswag_every and (done or self._due(ev.hellaswag_every)):
            result = evaluate_hellaswag(self.model, ev.hellaswag_data or None, ev.hellaswag_limit, self.env,
                                        self.autocast)
            self.state.last["hellaswag_acc_norm"] = result["acc_norm"]
            if self.log:
                self.log.write("hellaswag", step=step, tokens=tokens, **result, seconds=round(time.time() - t0, 3))
                self.print(f"step {step:6d} | hellaswag acc_norm {result['acc_norm']:.4f} (n={result['n']})")
        t0 = time.time()
        if self.env.is_main and ev.sample_every and (done or self._due(ev.sample_every)):
            # Its own generator: sampling must not move the training run's random streams.
            gen = torch.Generator().manual_seed(self.exp.seed + step)
            self.model.eval()
            text = sample(self.model, ev.sample_prompt, ev.sample_tokens, generator=gen)[0]
            self.model.train()
            self.log.write("sample", step=step, text=text, seconds=round(time.time() - t0, 3))
            self.print(f"step {step:6d} | sample: {text!r}")
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.timer.resume()

    def agree(self) -> tuple[bool, bool]:
        """Every few steps, in one small CPU all-reduce, the ranks share their view of stop signals and
        of background saves, and rank 0's clock says whether a time-based save is due. Returns
        (stop, save now)."""
        due = bool(self.save_plan) and self.env.is_main and \
            time.time() - self.last_save >= self.save_plan["interval_s"]
        stop, writing, due = distributed.any_ranks([self.stop.requested, self.checkpointer.writing(), due],
                                                   self.env)
        if self.checkpointer.pending() and not writing:
            self.checkpointer.finish()
        return stop, due

    # ------------------------------------------------------------------ healthy nodes only

    def check_nodes(self) -> str | None:
        """In a Slurm allocation (cluster.preflight): no node this run has moved off before, and a
        preflight of every node. A bad one ends this start before the first step ("excluded"): the
        launcher requeues the job without it."""
        if not (self.exp.cluster.preflight and os.environ.get("SLURM_JOB_ID")):
            return None
        excluded = distributed.on_main(self.run_dir.excluded_hosts, self.env)
        if again := [h for h in dict.fromkeys(self.hosts) if h in excluded]:
            job = os.environ["SLURM_JOB_ID"]
            tries = distributed.on_main(lambda: self.run_dir.exclusions_of(job, "excluded earlier"), self.env)
            if tries >= EXCLUSION_TRIES:
                raise RuntimeError(f"Slurm has placed job {job} on {', '.join(again)}, which this run moved off, "
                                f"{tries + 1} times: its ExcNodeList could not be set (see "
                                f"{self.run_dir.slurm}/exclude-{job}-*.out). Set it while the job is pending: "
                                f"scontrol update JobId={job} ExcNodeList={','.join(excluded)}")
            return self.move_off(again, "excluded earlier", {})
        t0 = time.perf_counter()
        rows = verdicts(preflight(self.env, self.train_data.files), self.exp.cluster)
        seconds = round(time.perf_counter() - t0, 3)  # its cost: part of every start-up
        if self.log:
            for row in rows:
                self.log.write("preflight", step=self.state.step, seconds=seconds, **row)
            self.print(f"preflight ({seconds:.1f} s):\n" + health_table(rows))
        bad = {r["host"]: r["reasons"] for r in rows if r["verdict"] == "bad"}
        return self.move_off(list(bad), "preflight", bad) if bad else None

    def ready(self) -> None:
        """The end of this start's first step: from here on, training time is measured step by step."""
        if self.log:
            self.log.write("ready", step=self.state.step)
        self.timer.reset()

    def move_off(self, hosts: list[str], reason: str, evidence: dict) -> str:
        """Stop this start so that the job is requeued without `hosts`, recorded (with why) in the run."""
        self.checkpointer.finish()
        if self.env.is_main:
            self.run_dir.record_exclusion(job_id=os.environ.get("SLURM_JOB_ID"), step=self.state.step, hosts=hosts,
                                          reason=reason, evidence=evidence)
        self._stop("excluded", hosts=hosts, why=reason)
        return "excluded"

    # ------------------------------------------------------------------ records

    def _open_log(self) -> None:
        if not self.env.is_main:
            return
        exp, tc = self.exp, self.exp.train
        self.log = MetricsLog(self.run_dir, restart=self.restart)
        self.state.wandb_id = start_wandb(self.log, exp.log, self.run_dir, exp.name, config.flatten(exp))
        device = _device_name(self.device)
        self.log.write("start", step=self.state.step, world_size=self.env.world_size, device=device,
                       hosts=self.hosts, job_id=os.environ.get("SLURM_JOB_ID"), allocated_at=allocation_started(),
                       node_env=self.node_env, checkpoint_plan=self.save_plan,
                       checkpoint=str(self.resumed_from) if self.resumed_from else None,
                       init_from=None if self.resumed_from else exp.model.init_from or None,  # weights loaded from it
                       auto_micro_batch=self.auto_batch, lr_scaling=exp.optim.lr_scaling,
                       peak_lr=exp.optim.scaled_lr, min_lr=exp.optim.scaled_min_lr,
                       spec_changes=config.describe(self.spec_changes) or None)
        what = f"resumed from {self.resumed_from}" if self.resumed_from else \
            f"starting from {exp.model.init_from}" if exp.model.init_from else "starting from scratch"
        self.print(f"{exp.name}: {what} at step {self.state.step}/{exp.schedule.steps} (restart {self.restart}); "
                   f"{self.env.world_size} x {device}, {self.accum} micro-steps of {tc.micro_batch}x{tc.seq_len} "
                   f"per step, {tc.batch_tokens:,} tokens/step")
        if exp.optim.lr_scaling != "none":
            self.print(f"lr_scaling={exp.optim.lr_scaling} from {exp.optim.base_batch_tokens:,} to {tc.batch_tokens:,} "
                       f"tokens/step: peak lr {exp.optim.scaled_lr:.3g}, min lr {exp.optim.scaled_min_lr:.3g}")
        if self.spec_changes:
            self.print(f"spec changed since the last start: {config.describe(self.spec_changes)}")

    def _stop(self, reason: str, **fields: object) -> None:
        if self.log:
            self.log.write("stop", step=self.state.step, reason=reason, **fields)
            self.log.sync()
        self.print(f"{self.exp.name}: stopped at step {self.state.step} ({reason})")

    def write_summary(self) -> None:
        if not self.env.is_main:
            return
        manifest = load_manifest(self.exp.data.dir)
        rows = self.run_dir.metrics_rows()
        starts = [r for r in rows if r["kind"] == "start"]
        tc, last = self.exp.train, self.state.last
        summary = {
            "name": self.exp.name,
            "parameters": self.model.num_params(),
            "parameters_non_embedding": self.model.num_params(non_embedding=True),
            "dataset": {s: manifest["splits"][s]["tokens"] for s in manifest["splits"]},
            "tokens_trained": self.state.step * tc.batch_tokens,
            "global_batch_tokens": tc.batch_tokens,
            "steps": self.state.step,
            "context_length": tc.seq_len,
            "final_train_loss": last.get("train_loss"),
            "final_val_loss": last.get("val_loss"),
            "final_hellaswag_acc_norm": last.get("hellaswag_acc_norm"),
            "wall_seconds": round(time.time() - starts[0]["time"], 1) if starts else None,
            "restarts": len(starts) - 1,
            "devices": f"{self.env.world_size} x {_device_name(self.device)}",
            # Where the device-hours went, up to this stop (harness.status and analysis add what
            # happens after it: the allocation's last seconds).
            "ledger": ledger(rows, read_jsonl(self.run_dir.jobs)).to_dict(),
        }
        self.run_dir.write_summary(summary)
        shown = {k: v for k, v in summary.items() if k != "ledger"} | {"goodput": f"{summary['ledger']['goodput']:.1%}"}
        self.print("summary: " + ", ".join(f"{k}={v}" for k, v in shown.items()))  # summary.json has the ledger

    def record_error(self, e: BaseException) -> None:
        """The error in the run's records (every rank), and a stop row saying why (rank 0)."""
        error = record_error(self.run_dir, e, self.state.step)
        if isinstance(e, NonFiniteError):
            self._stop("nonfinite", failed_step=e.step, spec_hash=config.spec_hash(self.exp))
        else:
            self._stop("failed", error=error)

    def close(self) -> None:
        if self.log:
            self.log.close()
        # Drop DDP before the process group goes (see distributed.teardown).
        self.trained = None


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
    except SpecError as e:
        sys.exit(f"error: {e}")  # no run to record it in: a clear message, not a traceback
    try:
        env = distributed.setup(exp.train.device, exp.train.backend, exp.train.collective_timeout_min)
        trainer = Trainer(exp, env, stop)
    except BaseException as e:  # recorded in the run, for harness.status and triage, then as before
        record_error(RunDir(exp.run_dir), e, step=None)
        if isinstance(e, SpecError | DataError | HellaSwagDataError | CheckpointLayoutError):
            sys.exit(f"error: {e}")  # bad input: a clear message, not a traceback
        raise
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


def record_error(run: RunDir, e: BaseException, step: int | None) -> str:
    """Every failing rank leaves its error in the run's error records, where harness.status shows it."""
    error = f"{type(e).__name__}: {e}"
    run.record_error(rank=int(os.environ.get("RANK", 0)), host=node_name(), step=step, error=error,
                     traceback=traceback.format_exc(limit=-8))
    return error


if __name__ == "__main__":
    main()
