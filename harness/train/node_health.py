"""Healthy nodes only, in the loop: at the start of every job, no host the run has moved off before, and a
preflight of every host (harness.cluster.health); at log steps, the straggler watch; all along, a heartbeat
(harness.train.heartbeat), which names the host of a rank that hung when a collective times out. A bad host
ends the start before the first step, a lasting straggler after a checkpoint, a hung one when the timeout
comes: the run records the host and why in exclusions.jsonl, and the launcher requeues the job without it
(harness.cluster.job.after_step)."""

import os
import time
from typing import Any

from harness import distributed
from harness.cluster.health import preflight
from harness.cluster.nodes import StragglerWatch, straggler, table, verdicts
from harness.records import Preflight, Stop
from harness.spec import ClusterConfig
from harness.train.component import Component
from harness.train.heartbeat import Heartbeat

EXCLUSION_TRIES = 3  # starts on a node the run had moved off, before the job gives up on Slurm excluding it


class NodeHealth(Component):
    def __init__(self, cfg: ClusterConfig, hosts: list[str], shard_files: list, heartbeat: Heartbeat):
        self.cfg, self.hosts, self.shard_files, self.heartbeat = cfg, hosts, shard_files, heartbeat
        self.watch = StragglerWatch(cfg.straggler_ratio, cfg.straggler_steps)
        self.leave: str | None = None  # a straggler to move off, once the watch says so
        self.declares = False  # this rank declared a hang (the lowest rank left): it writes the records

    def on_start(self, t: Any) -> Stop | None:
        """In a Slurm allocation (cluster.preflight): no host moved off before, and a preflight of every host."""
        self.heartbeat.start()
        if not (self.cfg.preflight and os.environ.get("SLURM_JOB_ID")):
            return None
        excluded = distributed.on_main(t.run_dir.excluded_hosts, t.env)
        if again := [h for h in dict.fromkeys(self.hosts) if h in excluded]:
            job = os.environ["SLURM_JOB_ID"]
            tries = distributed.on_main(lambda: t.run_dir.exclusions_of(job, "excluded earlier"), t.env)
            if tries >= EXCLUSION_TRIES:
                raise RuntimeError(f"Slurm has placed job {job} on {', '.join(again)}, which this run moved off, "
                                   f"{tries + 1} times: its ExcNodeList could not be set (see "
                                   f"{t.run_dir.slurm}/exclude-{job}-*.out). Set it while the job is pending: "
                                   f"scontrol update JobId={job} ExcNodeList={','.join(excluded)}")
            return self.move_off(t, again, "excluded earlier", {})
        t0 = time.perf_counter()
        rows = verdicts(preflight(t.env, self.shard_files), self.cfg)
        seconds = round(time.perf_counter() - t0, 3)  # its cost: part of every start-up
        for row in rows:
            t.recorder.write(Preflight(step=t.state.step, seconds=seconds, **row))
        t.print(f"preflight ({seconds:.1f} s):\n" + table(rows))
        bad = {r["host"]: r["reasons"] for r in rows if r["verdict"] == "bad"}
        return self.move_off(t, list(bad), "preflight", bad) if bad else None

    def slowest(self, t: Any, forward_per_step: float) -> tuple[str, float] | None:
        """At a log step: the slowest host by its ranks' own forward passes (which no other rank can slow
        down) and its ratio to the others; every rank gets every rank's time, and so decides the same."""
        if len(set(self.hosts)) < 2:
            return None
        found = straggler(distributed.gather(forward_per_step, t.env), self.hosts)
        self.leave = self.watch.update(found)
        return found

    def after_step(self, t: Any, pending: Stop | None) -> Stop | None:
        self.heartbeat.step = t.state.step
        if self.leave and t.state.step < t.exp.schedule.steps:
            return self.move_off(t, [self.leave], "straggler", self.watch.evidence)
        return None

    def on_stop(self, t: Any, stop: Stop) -> None:
        self.heartbeat.stop()

    def hung(self, t: Any) -> Stop | None:
        """After a collective timed out on this rank: the hosts of the ranks that hung, to move off (the lowest
        rank left records it), with this rank's stacks, and those of the ranks stuck but alive, in the run's
        error records. None when no host can be blamed (none froze, or every host did): the job just fails."""
        frozen = self.heartbeat.frozen()
        if frozen is None:  # the store does not answer: rank 0, which hosts it, froze
            frozen = {0: self.hosts[0]}
        mine = self.heartbeat.write_stacks()
        t.run_dir.record_error(rank=t.env.rank, host=self.hosts[t.env.rank], step=t.state.step,
                               error=f"stacks when the hang was declared ({mine.name})", stacks=mine.read_text())
        hosts = sorted({self.hosts[rank] for rank in frozen})
        if not hosts or set(hosts) == set(self.hosts):
            return None
        self.declares = t.env.rank == min(rank for rank in range(t.env.world_size) if rank not in frozen)
        if self.declares:
            for rank in frozen:  # a frozen rank writes no stacks; one stuck but alive does, when asked
                path = mine.parent / f"rank_{rank:05d}.txt"
                if path.exists():
                    t.run_dir.record_error(rank=rank, host=self.hosts[rank], step=None, stacks=path.read_text(),
                                           error="stacks of a rank that did not reach the collective")
            t.run_dir.record_exclusion(job_id=os.environ.get("SLURM_JOB_ID"), step=t.state.step, hosts=hosts,
                                       reason="hung", evidence={"ranks": sorted(frozen),
                                                                "timeout_min": t.exp.train.collective_timeout_min})
        return Stop(step=t.state.step, reason="excluded", hosts=hosts, why="hung")

    def move_off(self, t: Any, hosts: list[str], why: str, evidence: dict) -> Stop:
        """Stop this start so that the job is requeued without `hosts`, recorded (with why) in the run."""
        if t.env.is_main:
            t.run_dir.record_exclusion(job_id=os.environ.get("SLURM_JOB_ID"), step=t.state.step, hosts=hosts,
                                   reason=why, evidence=evidence)
        return Stop(step=t.state.step, reason="excluded", hosts=hosts, why=why)
