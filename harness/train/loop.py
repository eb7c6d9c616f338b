"""The training loop: build, restore, step, stop.

    python -m harness.train experiments/shakespeare.py [--optim.lr 1e-3 ...]
    torchrun --nproc-per-node 8 -m harness.train experiments/fineweb_10b.py
    python -m harness.train log/fineweb_10b            # continue a run from its directory

On start the trainer resumes from the newest valid checkpoint in the run directory by itself (a branch's
first start: from the checkpoint of another run it names in `branch_from`). What happens around a step is
done by components (harness/train/component.py), in this order: the records, node health (preflight,
stragglers), evaluation, the queueing of this run's branches, and the save policy, which also decides, with
all ranks together, to stop on SIGUSR2/SIGTERM (preemption, time limit, requeue) after saving one checkpoint.
"""

import contextlib
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel as DDP

from harness import distributed, records
from harness.cluster import inputs
from harness.cluster.slurm import node_name
from harness.data.manifest import DataError
from harness.data.reader import ShardedTokenReader
from harness.eval.hellaswag import HellaSwagDataError
from harness.model.gpt import GPT, autocast, model_flops_utilisation, peak_flops
from harness.model.io import load_pretrained
from harness.model.sources import CheckpointLayoutError
from harness.records import Checkpoint, Ready, Stop, Train
from harness.run_dir import RunDir, read_jsonl
from harness.spec import (
    Experiment,
    SpecError,
    init_run_dir,
    lr_at,
    parse_cli,
    resolve,
    spec_hash,
    to_dict,
)
from harness.train.auto_batch import resolve_micro_batch
from harness.train.branching import Branches
from harness.train.checkpoint import (
    Checkpointer,
    TrainState,
    rng_state,
    set_rng_state,
    starting_point,
)
from harness.train.evaluate import Evaluators
from harness.train.heartbeat import Heartbeat, timed_out
from harness.train.node_health import NodeHealth
from harness.train.nonfinite import NonFiniteError, NonFiniteRule, refuse_to_replay
from harness.train.optim import build_optimizer, set_lr
from harness.train.preempt import StopRequest
from harness.train.recorder import Recorder, record_error
from harness.train.saving import SavePolicy, plan
from harness.train.timer import StartupClock, StepTimer


class Trainer:
    def __init__(self, exp: Experiment, env: distributed.DistEnv, signals: StopRequest, clock: StartupClock):
        """Build everything the spec describes, then restore the newest checkpoint that loads."""
        self.env, self.device, self.run_dir, self.clock = env, env.device, RunDir(exp.run_dir), clock
        exp, self.filled = inputs.ready(resolve(exp), env.world_size)  # a spec built in Python resolves too
        self.precision = set_up_device(exp, self.device)
        if exp.train.compile:
            keep_compile_caches(Path(exp.cluster.compile_cache) if exp.cluster.compile_cache else
                                self.run_dir.compile_cache)
        torch.manual_seed(exp.seed)  # the same on every rank: identical initial weights (DDP broadcasts rank 0's)
        self.model = GPT(exp.model).to(self.device)
        exp, self.auto_batch = resolve_micro_batch(exp, self.model, self.run_dir, env, self.precision)
        self.exp, tc = exp, exp.train
        self.spec_changes = distributed.on_main(lambda: init_run_dir(self.run_dir, exp), env)
        self.accum = tc.batch_tokens // (tc.micro_batch * tc.seq_len * env.world_size)
        self.optimizer = build_optimizer(self.model, exp.optim, self.device.type)
        reader = dict(batch_size=tc.micro_batch, seq_len=tc.seq_len, rank=env.rank, world_size=env.world_size,
                      device=self.device)
        self.train_data = ShardedTokenReader(exp.data.dir, "train", shuffle=exp.data.shuffle, seed=exp.seed, **reader)
        val_data = ShardedTokenReader(exp.data.dir, "val", shuffle=False, **reader) if exp.eval.val_every else None
        self.timer = StepTimer(self.device)
        self.hosts = distributed.gather(node_name(), env)
        # Rank 0 reads the earlier starts' records once, for every rank: the restart number, how the last start
        # ended, and how often to save by time.
        self.restart, self.last_stop = distributed.on_main(lambda: records.history(records.columns(self.run_dir)), env)
        self.interval = distributed.on_main(lambda: plan(exp.checkpoint, records.columns(self.run_dir),
                                                         read_jsonl(self.run_dir.jobs)), env)
        self.checkpointer = Checkpointer(self.run_dir.checkpoints, exp.checkpoint, env)
        self.recorder = Recorder(self.run_dir, exp.log, env.is_main, self.restart)
        self.nonfinite = NonFiniteRule(tc.on_nonfinite, self.device, self.run_dir)
        self.health = NodeHealth(exp.cluster, self.hosts, self.train_data.files,
                                 Heartbeat(env, self.hosts[env.rank], tc.collective_timeout_min, self.run_dir.stacks))
        self.components = [self.recorder, self.nonfinite, self.health,
                           Evaluators(exp.eval, val_data, self.precision, tc.batch_tokens, exp.seed),
                           Branches(exp.branches, env.is_main),
                           SavePolicy(self.checkpointer, tc.stop_check_every, signals, self.interval)]
        self.state = TrainState()
        self.branched: dict | None = None  # a branch's first start: the run, step and checkpoint it started from
        clock.mark("build")
        self.resumed_from = self.restore()
        clock.mark("restore")
        if self.resumed_from:
            refuse_to_replay(self.last_stop, spec_hash(exp), self.run_dir, self.resumed_from)
        # The module that trains: the model compiled, then wrapped in DDP (as build-nanogpt does), so that DDP's
        # no_sync flag and gradient hooks stay outside the compiled graph. Evaluation, sampling and checkpoints
        # use the plain self.model, which shares its parameters.
        compiled = torch.compile(self.model) if tc.compile else self.model
        self.trained = DDP(compiled, device_ids=[env.local_rank] if self.device.type == "cuda" else None) \
            if env.distributed else compiled
        self.flops_per_token = self.model.flops_per_token(tc.seq_len)
        self.peak_flops = peak_flops(self.device, tc.peak_tflops)

    def print(self, msg: str) -> None:
        if self.env.is_main:
            print(msg, flush=True)

    # ------------------------------------------------------------------ state <-> checkpoint

    def restore(self) -> Path | None:
        """checkpoint -> state: the newest checkpoint of this run that loads (or, at a branch's first start, the
        checkpoint of another run it branches from) into the model, the optimizer, this rank's reader and random
        streams, and the components (a branch's start afresh). Returns its path (None: a fresh start)."""
        exp = self.exp
        found = starting_point(exp, self.run_dir.checkpoints, self.env.rank, self.env.world_size)
        if found is None:
            if exp.model.init_from:  # a finetune's first start: only the weights; optimizer and data afresh
                load_pretrained(self.model)
            return None
        path, ckpt, changes, self.branched = found
        if self.branched is None:
            self.spec_changes = changes
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optim"])
        self.state = TrainState.from_checkpoint(ckpt)
        if self.branched:
            self.state.components = {}  # the source run's records and wandb run are its own
        self.train_data.load_state_dict(self.state.reader, reshard=exp.data.reshard)
        set_rng_state(self.state.rng, self.device)
        for c in self.components:
            c.load_state_dict(self.state.components.get(type(c).__name__, {}))
        return path

    def save(self) -> None:
        """state -> checkpoint; every rank calls it together."""
        self.nonfinite.check(self.state.step)  # never let a NaN checkpoint replace a good one
        self.timer.pause()
        t0 = time.time()
        if hasattr(self.optimizer, "consolidate_state_dict"):  # ZeRO-1: gather the shards on rank 0
            self.optimizer.consolidate_state_dict(to=0)
        self.state.reader, self.state.rng = self.train_data.state_dict(), rng_state(self.device)
        main, step = self.env.is_main, self.state.step
        self.checkpointer.save(step, self.model.state_dict() if main else None,
                               self.optimizer.state_dict() if main else None, self.state.own(),
                               {"spec": to_dict(self.exp), **self.state.shared(self.components)})
        self.recorder.write(Checkpoint(step=step, seconds=round(time.time() - t0, 3),
                                       path=str(self.checkpointer.path(step)), background=self.checkpointer.background))
        self.recorder.sync()
        self.timer.resume()

    # ------------------------------------------------------------------ the loop

    def run(self) -> str:
        total = self.exp.schedule.steps
        if self.state.step >= total:
            self.print(f"{self.exp.name} already finished ({self.state.step}/{total} steps)")
            return "finished"
        for c in self.components:
            if stop := c.on_start(self):
                return self.end(stop)
        self.timer.reset()
        first = True
        while self.state.step < total:
            loss, norm, lr = self.train_step()
            self.state.step += 1
            self.timer.tick()
            if first:  # the first step of a start (mostly compilation, warm-up) ends the start-up
                self.recorder.write(Ready(step=self.state.step))
                self.timer.reset()
                first = False
            if self.state.step % self.exp.log.every == 0 or self.state.step == total:
                self.log_step(loss, norm, lr)
            stop = None
            for c in self.components:  # every one sees the stop an earlier one asked for; the first ask wins
                asked = c.after_step(self, stop)
                stop = stop or asked
            if stop:
                return self.end(stop)
        return self.end(Stop(step=self.state.step, reason="finished"))

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One optimizer step: data, forward and backward over the micro-batches, clip, lr, update."""
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.accum):
            x, y = self.train_data.next_batch()
            # Gradients are all-reduced only on the last micro-step; before that they accumulate locally.
            last = micro == self.accum - 1
            with contextlib.nullcontext() if last or not isinstance(self.trained, DDP) else self.trained.no_sync():
                with self.timer.forward_pass(), self.precision:
                    _, loss = self.trained(x, y)
                # Each micro-batch loss is a mean over its tokens: dividing by the number of micro-steps
                # makes the accumulated gradient that of the mean over the whole batch, not a sum.
                loss = loss / self.accum
                loss.backward()
            loss_sum += loss.detach()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.exp.optim.grad_clip or math.inf)
        lr = lr_at(self.state.step, self.exp.optim.scaled_lr, self.exp.schedule, self.exp.optim.scaled_min_lr)
        if self.nonfinite.allows_update(norm, self.state.step + 1):
            set_lr(self.optimizer, lr)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, norm, lr

    def log_step(self, loss: torch.Tensor, norm: torch.Tensor, lr: float) -> None:
        """A train row: the loss over all ranks (this syncs the device), throughput, MFU, the slowest host."""
        step, tc = self.state.step, self.exp.train
        loss_v = distributed.all_reduce_mean(loss.clone(), self.env).item()
        norm_v = norm.item()
        self.nonfinite.check(step, loss_v)
        seconds, steps, forward = self.timer.read()
        slowest = self.health.slowest(self, forward / steps) if steps else None
        # A row right after a start's first step covers no timed step: that step was start-up.
        dt = seconds / steps if steps else None
        tokens_per_s = tc.batch_tokens / dt if dt else None
        mfu = tokens_per_s and model_flops_utilisation(self.flops_per_token, tokens_per_s, self.peak_flops,
                                                       self.env.world_size)
        self.recorder.write(Train(step=step, tokens=step * tc.batch_tokens, loss=_finite_or_none(loss_v), lr=lr,
                                  grad_norm=_finite_or_none(norm_v), seconds=seconds, steps=steps, step_time=dt,
                                  tokens_per_s=tokens_per_s, mfu=mfu, peak_mem_gb=_peak_memory_gb(self.device),
                                  slowest_host=slowest[0] if slowest else None,
                                  slowest_ratio=round(slowest[1], 3) if slowest else None))
        speed = f" | {dt * 1000:.0f} ms | {tokens_per_s:,.0f} tok/s" if dt else ""
        mfu_s = f" | mfu {mfu:.1%}" if mfu else ""
        self.print(f"step {step:6d}/{self.exp.schedule.steps} | loss {loss_v:.4f} | lr {lr:.2e} | norm {norm_v:.3f}"
                   f"{speed}{mfu_s}")

    # ------------------------------------------------------------------ a start's first and last records

    def end(self, stop: Stop) -> str:
        """Every component's last word on this start (the recorder writes the stop row and the summary)."""
        for c in reversed(self.components):
            c.on_stop(self, stop)
        self.print(f"{self.exp.name}: stopped at step {stop.step} ({stop.reason})")
        return stop.reason

    def fail(self, e: BaseException) -> str:
        """The error in the run's records (every rank), and a stop row saying why (rank 0; after a hang, the
        lowest rank left). A collective that timed out because a rank hung moves off that rank's host."""
        error = record_error(self.run_dir, e, self.state.step)
        stop = self.health.hung(self) if timed_out(e) else None
        if stop is not None:
            self.recorder.take_over(self.health.declares)  # rank 0, which writes the records, may be the one hung
        elif isinstance(e, NonFiniteError):
            stop = Stop(step=self.state.step, reason="nonfinite", failed_step=e.step, spec_hash=spec_hash(self.exp))
        else:
            stop = Stop(step=self.state.step, reason="failed", error=error)
        return self.end(stop)

    def close(self) -> None:
        self.recorder.close()
        self.trained = None  # drop DDP before the process group goes (see distributed.teardown)


def set_up_device(exp: Experiment, device: torch.device) -> contextlib.AbstractContextManager:
    """Kernels and precision as the spec asks; returns the precision the model runs in."""
    if exp.train.deterministic:
        # GPU kernels that reduce with atomics (embedding backward, some attention backward passes) sum in
        # a different order every run; exact resume on a GPU needs the deterministic ones, and cuBLAS a
        # fixed workspace for them.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast use TF32
        torch.backends.cudnn.allow_tf32 = True
    return autocast(device, exp.train.dtype)


def keep_compile_caches(directory: Path) -> None:
    """torch.compile's caches (inductor's graphs and kernels, AOT autograd's, Triton's) in `directory`, which
    outlives the allocation: a requeued start finds what the last one compiled and does not compile it again.
    Set before the first compilation, which reads them (a value already in the environment wins)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(directory / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(directory / "triton"))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no NaN; null keeps metrics.jsonl strict JSON


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # peak resident memory (KiB)


# Failures no restart can cure: a clear message, not a traceback, and no restart by torchrun.
INCURABLE = (SpecError, DataError, HellaSwagDataError, CheckpointLayoutError, NonFiniteError)


@record  # under torchrun, the first failing rank's traceback heads the job's error report
def main(argv: list[str] | None = None) -> str:
    signals = StopRequest()  # first: a preemption signal during start-up must not kill the process
    clock = StartupClock()
    try:
        (exp,) = parse_cli(sys.argv[1:] if argv is None else argv, "python -m harness.train")
    except SpecError as e:
        sys.exit(f"error: {e}")  # no run to record it in
    try:
        env = distributed.setup(exp.train.device, exp.train.backend, exp.train.collective_timeout_min)
        clock.mark("process_group")
        trainer = Trainer(exp, env, signals, clock)
    except BaseException as e:  # recorded in the run, for harness.status and triage, then as before
        record_error(RunDir(exp.run_dir), e, step=None)
        give_up(e)
        raise
    # An exception below propagates without teardown: waiting in a barrier for a failed rank would hang.
    try:
        outcome = trainer.run()
    except BaseException as e:
        if trainer.fail(e) == "excluded":  # a rank hung: the job goes back in the queue without its host
            distributed.no_restart()
            sys.exit(f"error: {e}")
        give_up(e)
        raise
    trainer.close()
    del trainer
    distributed.teardown(env)
    if outcome == "finished" and exp.log.export_hf and env.is_main:
        export_hf(RunDir(exp.run_dir))
    return outcome


def export_hf(run: RunDir) -> None:
    """log.export_hf: the final checkpoint as a HuggingFace directory, by `python -m harness.export` in a process
    of its own (the trainer's memory is free, and the export's imports stay out of the trainer). A failed
    export is said, not raised: the training it would follow has finished."""
    print(f"exporting the final model to {run.hf} (log.export_hf)", flush=True)
    done = subprocess.run([sys.executable, "-m", "harness.export", str(run.path), "--out", str(run.hf)])
    if done.returncode != 0:
        print(f"WARNING: the export failed (exit {done.returncode}); the run finished and its checkpoints are "
              f"intact: retry with python -m harness.export {run.path} --out {run.hf}", file=sys.stderr, flush=True)


def give_up(e: BaseException) -> None:
    """An incurable failure ends the process with its message, and torchrun restarts nothing."""
    if isinstance(e, INCURABLE):
        distributed.no_restart()
        sys.exit(f"error: {e}")
