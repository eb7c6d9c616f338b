"""harness.ledger: where a run's time went; the checkpoint interval chosen from it."""

import math
import random
from pathlib import Path

import pytest

from harness import records
from harness.ledger import CATEGORIES, ledger, starts
from harness.records import Rows
from harness.run_dir import RunDir, read_jsonl
from harness.spec import CheckpointConfig
from harness.train.saving import plan, young_interval
from tests.helpers import finish, kill_group, launch, rows, train_args, wait_for_step


def test_every_second_of_a_start_is_in_one_category() -> None:
    """A start by hand: allocated at 100, a val at step 0 (2 s), the first step done at 110 (start-up
    = 10 - 2), then 5 steps in two rows (4 s + 3 s), a checkpoint (1 s), the end of its records at 120
    and of its allocation at 121."""
    rows = [
        {"kind": "start", "restart": 0, "step": 0, "time": 101.0, "allocated_at": 100.0, "job_id": "7",
         "world_size": 2},
        {"kind": "val", "restart": 0, "step": 0, "time": 104.0, "seconds": 2.0},
        {"kind": "ready", "restart": 0, "step": 1, "time": 110.0},
        {"kind": "train", "restart": 0, "step": 3, "time": 114.0, "seconds": 4.0, "steps": 2},
        {"kind": "train", "restart": 0, "step": 6, "time": 117.5, "seconds": 3.0, "steps": 3},
        {"kind": "checkpoint", "restart": 0, "step": 6, "time": 118.6, "seconds": 1.0},
        {"kind": "stop", "restart": 0, "step": 6, "time": 120.0, "reason": "finished"},
    ]
    jobs = [{"time": 90.0, "job_id": "7"}, {"time": 121.0, "event": "step_end", "job_id": "7"}]
    (s,) = starts(Rows.from_dicts(rows), jobs)
    assert s.seconds == pytest.approx({"startup": 8.0, "productive": 7.0, "lost": 0.0, "eval": 2.0,
                                       "checkpoint": 1.0, "shutdown": 1.0, "other": 2.0})
    assert sum(s.seconds.values()) == pytest.approx(s.wall) and s.wall == 21.0
    assert s.queued_at == 90.0 and s.devices == 2
    total = ledger(Rows.from_dicts(rows), jobs)
    assert total.queue_hours == pytest.approx(10 / 3600, abs=1e-6)  # rounded to the 1/1,000,000 h
    assert total.device_hours["productive"] == pytest.approx(2 * 7 / 3600, abs=1e-6)
    assert total.goodput == pytest.approx(7 / 21, abs=1e-4)


def test_steps_recomputed_after_a_resume_from_an_older_checkpoint_are_lost() -> None:
    """Start 0 reached step 8 and was killed; start 1 resumed from the checkpoint at step 4, so steps
    5-8 of start 0 were done twice: lost, to the second."""
    rows = [{"kind": "start", "restart": 0, "step": 0, "time": 0.0, "allocated_at": 0.0},
            {"kind": "ready", "restart": 0, "step": 1, "time": 1.0},
            {"kind": "train", "restart": 0, "step": 4, "time": 4.0, "seconds": 3.0, "steps": 3},
            {"kind": "train", "restart": 0, "step": 8, "time": 8.0, "seconds": 4.0, "steps": 4},
            {"kind": "start", "restart": 1, "step": 4, "time": 20.0, "allocated_at": 19.0},
            {"kind": "ready", "restart": 1, "step": 5, "time": 21.0},
            {"kind": "train", "restart": 1, "step": 8, "time": 24.0, "seconds": 3.0, "steps": 3}]
    first, second = starts(Rows.from_dicts(rows), [])
    assert first.seconds["productive"] == 3.0 and first.seconds["lost"] == 4.0
    assert first.ended_at == 8.0 and second.queued_at == 8.0  # killed: its allocation ends at its last record
    assert second.seconds["lost"] == 0.0 and second.seconds["productive"] == 3.0
    assert all(abs(s.seconds["other"]) < 1e-9 for s in (first, second))


def test_worker_restarts_within_one_allocation_are_not_queued() -> None:
    """torchrun restarted the workers three times in one allocation (job 1, allocated at 10): each
    start follows the last; none of it was queue time, and the allocation's wall time is all counted."""
    rows = [r for i in range(4) for r in (
        {"kind": "start", "restart": i, "step": 0, "time": 11.0 + 10 * i, "allocated_at": 10.0, "job_id": "1"},
        {"kind": "stop", "restart": i, "step": 0, "time": 19.0 + 10 * i, "reason": "failed"})]
    found = starts(Rows.from_dicts(rows), [{"time": 9.5, "job_id": "1"}])
    assert [s.queued_at for s in found] == [9.5, None, None, None]
    assert [s.allocated_at for s in found] == [10.0, 19.0, 29.0, 39.0]
    total = ledger(Rows.from_dicts(rows), [{"time": 9.5, "job_id": "1"}])
    assert total.queue_hours == pytest.approx(0.5 / 3600, abs=1e-6)
    assert total.allocated_device_hours == pytest.approx(39 / 3600, abs=1e-6)


def test_young_interval_loses_less_than_a_fixed_one_at_any_interruption_rate() -> None:
    """A small simulation: interruptions drawn at a given rate (exponential gaps) through a run of a
    week of work; each costs the work since the last save, each save its blocking cost. Saving every
    sqrt(2 C M) loses less than saving every 5 minutes, 30 minutes or 6 hours, both when interruptions
    are frequent and rare."""

    def lost_hours(interval: float, cost: float, mtbi: float, rng: random.Random) -> float:
        work, done, lost, saved, next_cut = 7 * 86400.0, 0.0, 0.0, 0.0, rng.expovariate(1 / mtbi)
        clock = 0.0
        while done < work:
            segment = min(interval, work - done)  # train until the next save
            if clock + segment + cost > next_cut:  # interrupted before the save completed
                lost += next_cut - clock
                clock = next_cut
                done = saved
                next_cut = clock + rng.expovariate(1 / mtbi)
                continue
            clock += segment + cost
            lost += cost
            done = saved = done + segment
        return lost / 3600

    def lost(interval: float, mtbi: float) -> float:  # the same interruptions for every policy
        rng = random.Random(0)
        return sum(lost_hours(interval, cost, mtbi, rng) for _ in range(200))

    cost = 60.0
    for mtbi in (3600.0, 7 * 86400.0):  # an interruption an hour, or a week
        auto = lost(young_interval(cost, mtbi), mtbi)
        for fixed in (300.0, 1800.0, 6 * 3600.0):  # every 5 minutes, 30 minutes, 6 hours
            assert auto < lost(fixed, mtbi), (mtbi, fixed)
    assert young_interval(60.0, 3600.0) == pytest.approx(math.sqrt(2 * 60 * 3600))


def test_the_plan_follows_the_runs_own_saves_and_interruptions() -> None:
    cfg = CheckpointConfig(every="auto", mtbi_prior_h=24.0, cost_prior_s=10.0)
    fresh = plan(cfg, Rows.from_dicts([]), [])
    assert fresh["interval_s"] == pytest.approx(math.sqrt(2 * 10.0 * 86400)) and not fresh["cost_measured"]
    rows = [{"kind": "start", "restart": 0, "step": 0, "time": 0.0, "allocated_at": 0.0},
            {"kind": "ready", "restart": 0, "step": 1, "time": 5.0},
            {"kind": "checkpoint", "restart": 0, "step": 1, "time": 7.0, "seconds": 2.0},
            {"kind": "checkpoint", "restart": 0, "step": 2, "time": 9.0, "seconds": 4.0},
            {"kind": "checkpoint", "restart": 0, "step": 3, "time": 13.0, "seconds": 3.0},
            {"kind": "stop", "restart": 0, "step": 3, "time": 3600.0, "reason": "preempted"}]
    rows = Rows.from_dicts(rows)
    seen = plan(cfg, rows, [])
    assert seen["cost_s"] == 3.0 and seen["interruptions"] == 1 and seen["observed_s"] == 3600
    assert seen["mtbi_s"] == round((3600 + 86400) / 2)
    assert seen["interval_s"] == pytest.approx(math.sqrt(2 * 3.0 * (3600 + 86400) / 2))
    assert plan(CheckpointConfig(every=100), rows, []) is None
    assert plan(CheckpointConfig(every="auto", every_min=1.0), rows, [])["interval_s"] == 60.0


@pytest.mark.slow
def test_a_killed_and_resumed_run_accounts_for_its_time(shakespeare_dir: Path, tmp_path: Path) -> None:
    """A real run, SIGKILLed after its checkpoint at 10 and resumed: the steps after 10 were done twice
    and are lost; every start's records account for its time to within a second."""
    run = tmp_path / "run"
    args = train_args(run, shakespeare_dir, "--eval.val_every", "10", "--eval.val_tokens", "4096")
    proc = launch("harness.train", *args, log=tmp_path / "log")
    wait_for_step(run, 14, proc)
    kill_group(proc)
    finish(launch("harness.train", *args, log=tmp_path / "log"), tmp_path / "log")
    found = starts(records.columns(RunDir(run)), read_jsonl(RunDir(run).jobs))
    assert [s.restart for s in found] == [0, 1]
    first = [r for r in rows(run, "train") if r["restart"] == 0]  # a row per step: log.every is 1
    assert max(r["step"] for r in first) >= 14
    assert found[0].seconds["lost"] == pytest.approx(sum(r["seconds"] for r in first if r["step"] > 10))
    assert found[0].seconds["productive"] == pytest.approx(sum(r["seconds"] for r in first if r["step"] <= 10))
    assert found[1].seconds["lost"] == 0 and found[1].seconds["productive"] > 0
    for s in found:
        assert set(s.seconds) == set(CATEGORIES) and abs(s.seconds["other"]) < 1.0, s.seconds
        assert s.seconds["startup"] > 0 and s.seconds["eval"] > 0
    summary = RunDir(run).summary.read_text()
    assert '"goodput"' in summary
