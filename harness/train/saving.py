"""The save policy: when the trainer saves a checkpoint (every N steps, every N minutes, or "auto": by
Young's interval from the run's own record of interruptions; at the end; before stopping on a signal or
moving off a host), and the ranks' agreement on stop signals, which decides a preemption's save.
"""

import math
import time
from typing import Any

from harness import distributed
from harness.ledger import starts
from harness.records import Rows, Stop
from harness.spec import CheckpointConfig
from harness.train.checkpoint import Checkpointer
from harness.train.component import Component
from harness.train.preempt import StopRequest


class SavePolicy(Component):
    """Saves when due; every `stop_check_every` steps the ranks agree, in one small CPU all-reduce, on stop
    signals, on background saves still being written, and (by rank 0's clock) on a time-based save. It
    comes last among the components, so that a stop another one asks for is preceded by a save."""

    def __init__(self, checkpointer: Checkpointer, stop_check_every: int, signals: StopRequest,
                 interval: dict | None):
        self.checkpointer, self.every, self.signals, self.interval = checkpointer, stop_check_every, signals, interval
        self.last_save = time.time()

    def after_step(self, t: Any, pending: Stop | None) -> Stop | None:
        step = t.state.step
        done = step == t.exp.schedule.steps
        saved = done or self.checkpointer.due(step)
        if saved:
            self.save(t)
        if pending is not None:  # moving off a host: from a checkpoint of this very step
            if not saved:
                self.save(t)
            return None
        if done or step % self.every:
            return None
        stop, save_due = self.agree(t)
        if (stop or save_due) and not saved:
            self.save(t)
        return Stop(step=step, reason="preempted", signal=self.signals.signal) if stop else None

    def save(self, t: Any) -> None:
        t.save()
        self.last_save = time.time()

    def agree(self, t: Any) -> tuple[bool, bool]:
        """(stop, save now), the same on every rank."""
        due = bool(self.interval) and t.env.is_main and time.time() - self.last_save >= self.interval["interval_s"]
        stop, writing, due = distributed.any_ranks([self.signals.requested, self.checkpointer.writing(), due], t.env)
        if self.checkpointer.pending() and not writing:
            self.checkpointer.finish()
        return stop, due

    def on_stop(self, t: Any, stop: Stop) -> None:
        if stop.reason not in ("failed", "nonfinite") and stop.why != "hung":  # peers may be gone: no collective
            self.checkpointer.finish()


def young_interval(cost_s: float, mtbi_s: float) -> float:
    """The checkpoint interval that loses the least expected time when saving costs `cost_s` seconds
    and interruptions come `mtbi_s` seconds apart on average: sqrt(2 C M) (Young 1974; Daly 2006
    refines it by -C, which matters only when C is not small against M)."""
    return math.sqrt(2 * cost_s * mtbi_s)


def plan(cfg: CheckpointConfig, rows: Rows, jobs: list[dict]) -> dict | None:
    """The time-based save interval for this start, with its inputs (logged in the start row), or
    None when saves go by step count alone. For "auto": C is the median blocking time of the run's
    saves so far (the prior before any); M is the run's allocated time over its interruptions, with
    the prior counted as one more interruption's worth of time (so that a run that has seen none
    keeps the prior, and one that has seen many follows them)."""
    out: dict = {}
    if cfg.every == "auto":
        costs = sorted(s for s in rows["seconds"][rows.kind("checkpoint")].tolist() if s == s)  # NaN: none given
        cost = costs[len(costs) // 2] if costs else cfg.cost_prior_s
        observed = sum(s.wall for s in starts(rows, jobs))
        ended = {r["restart"]: r["reason"] for r in rows.whole("stop")}  # each start's last stop
        interruptions = sum(ended.get(r["restart"]) != "finished" for r in rows.whole("start"))
        mtbi = (observed + cfg.mtbi_prior_h * 3600) / (interruptions + 1)
        out = {"every": "auto", "cost_s": round(cost, 3), "cost_measured": bool(costs), "mtbi_s": round(mtbi),
               "interruptions": interruptions, "observed_s": round(observed), "interval_s": young_interval(cost, mtbi)}
    if cfg.every_min:
        out["interval_s"] = min(out.get("interval_s", math.inf), cfg.every_min * 60)
        out["every_min"] = cfg.every_min
    return out or None
