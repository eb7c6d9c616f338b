"""Evaluation in the loop: validation loss, the tasks of the eval registry (`eval.tasks`), and a text
sample, each when due (and at the end), on the plain (uncompiled) module. Each row says how long it took:
evaluation time is not training time (the step timer is paused)."""

import contextlib
import time
from typing import Any

import torch

from harness.data.reader import ShardedTokenReader
from harness.eval import registry
from harness.eval.val_loss import val_scores
from harness.model.sample import sample
from harness.records import Eval, Sample, Stop, Val
from harness.spec import EvalConfig
from harness.train.component import Component


class Evaluators(Component):
    def __init__(self, cfg: EvalConfig, val_data: ShardedTokenReader | None,
                 precision: contextlib.AbstractContextManager, batch_tokens: int, seed: int):
        self.cfg, self.val_data, self.precision = cfg, val_data, precision
        self.batch_tokens, self.seed = batch_tokens, seed
        self.tasks: dict[str, tuple[registry.Task, list]] = {}

    def on_start(self, t: Any) -> Stop | None:
        """Every task's examples, loaded now: missing data fails at start-up, not at the first evaluation
        hours in. Then the step-0 evaluation of a fresh run."""
        if self.cfg.tasks_every:
            for name in registry.expand(self.cfg.tasks):
                task = registry.get(name)
                self.tasks[task.name] = task, task.load(self.cfg.tasks_data or None, self.cfg.tasks_limit, t.env)
        if t.state.step == 0:
            self.evaluate(t, done=False)
        return None

    def after_step(self, t: Any, pending: Stop | None) -> Stop | None:
        step, cfg = t.state.step, self.cfg
        done = step == t.exp.schedule.steps
        every = (cfg.val_every if self.val_data else 0, cfg.tasks_every if cfg.tasks else 0, cfg.sample_every)
        if done or any(e and step % e == 0 for e in every):
            self.evaluate(t, done)
        return None

    def evaluate(self, t: Any, done: bool) -> None:
        step, cfg = t.state.step, self.cfg
        due = lambda every: bool(every) and (done or step % every == 0)  # noqa: E731
        t.timer.pause()
        if self.val_data is not None and (step == 0 or due(cfg.val_every)):
            t0 = time.time()
            val = val_scores(t.model, self.val_data, cfg.val_tokens, t.env, self.precision)
            t.recorder.write(Val(step=step, tokens=step * self.batch_tokens, loss=val["loss"],
                                 val_tokens=cfg.val_tokens, seconds=round(time.time() - t0, 3), bpb=val["bpb"]))
            bpb = f" | {val['bpb']:.4f} bits/byte" if val["bpb"] is not None else ""
            t.print(f"step {step:6d} | val loss {val['loss']:.4f}{bpb}")
        if due(cfg.tasks_every):
            for name, (task, examples) in self.tasks.items():
                t0 = time.time()
                result = task.score(t.model, examples, t.env, self.precision, cfg.tasks_batch)
                t.recorder.write(Eval(step=step, tokens=step * self.batch_tokens, task=name, **result,
                                      seconds=round(time.time() - t0, 3)))
                norm = f" acc_norm {result['acc_norm']:.4f}" if result.get("acc_norm") is not None else ""
                t.print(f"step {step:6d} | {name} acc {result['acc']:.4f}{norm} (n={result['examples']})")
        if t.env.is_main and due(cfg.sample_every):
            t0 = time.time()
            # Its own generator: sampling must not move the training run's random streams.
            gen = torch.Generator().manual_seed(self.seed + step)
            t.model.eval()
            text = sample(t.model, cfg.sample_prompt, cfg.sample_tokens, generator=gen)[0]
            t.model.train()
            t.recorder.write(Sample(step=step, text=text, seconds=round(time.time() - t0, 3)))
            t.print(f"step {step:6d} | sample: {text!r}")
        if t.env.device.type == "cuda":
            torch.cuda.synchronize()
        t.timer.resume()
