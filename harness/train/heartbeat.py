"""Which rank hung: heartbeats through the job's rendezvous store, and the ranks' Python stacks.

When a collective never returns (a rank frozen, a node gone quiet), the other ranks fail only after
train.collective_timeout_min, and all they know is that they waited. So every rank of a distributed run
keeps a heartbeat in the store that the process group already has (at MASTER_ADDR:MASTER_PORT): a
background thread counts up every few seconds. A frozen process (SIGSTOP, a node whose network stopped)
stops counting; a rank that is alive but stuck (a deadlock) keeps counting, and dumps its stacks when
asked through the store, so the evidence of where it was survives. When a collective times out, the
ranks that are left ask for every rank's stacks, read the counts twice a few beats apart, and name the
ranks whose count did not move: their hosts are moved off, as a bad preflight's are.
"""

import datetime
import faulthandler
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import torch.distributed as dist

from harness.distributed import DistEnv


def timed_out(error: BaseException) -> bool:
    """Whether `error` is a collective that never completed (gloo's and NCCL's words for it)."""
    text = str(error)
    return "Timed out" in text or "timed out" in text or "Watchdog caught collective operation timeout" in text


def stacks() -> str:
    """This process's Python stacks, every thread (faulthandler's view: it works in any state)."""
    with tempfile.TemporaryFile("w+") as f:
        faulthandler.dump_traceback(f, all_threads=True)
        f.seek(0)
        return f.read()


class Heartbeat:
    """This rank's heartbeat thread and the reading of everyone's. A no-op in a single process."""

    def __init__(self, env: DistEnv, host: str, timeout_min: float, stacks_dir: Path):
        self.env, self.host, self.stacks_dir = env, host, stacks_dir
        # A few beats within the collective timeout: a frozen rank is told from a slow one well before it.
        self.interval = max(0.5, min(10.0, timeout_min * 60 / 6))
        self.prefix = f"harness/heartbeat/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/" \
                      f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        self.step, self.beats = 0, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _store(self) -> dist.Store:
        """A connection of our own to the process group's store (one per thread: clients are not shared)."""
        return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), self.env.world_size,
                             is_master=False, timeout=datetime.timedelta(seconds=max(10.0, 2 * self.interval)))

    def start(self) -> None:
        if self.env.distributed and "MASTER_ADDR" in os.environ:
            self._thread = threading.Thread(target=self._beat, name="harness-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        dumped = False
        try:
            store = self._store()
        except Exception:  # noqa: BLE001 - no store, no heartbeat: the hang is then reported without a host
            return
        while not self._stop.wait(self.interval):
            try:
                self.beats += 1
                store.set(f"{self.prefix}/{self.env.rank}",
                          json.dumps({"beats": self.beats, "step": self.step, "host": self.host}))
                if not dumped and store.check([f"{self.prefix}/dump"]):  # the others declared a hang: say where
                    self.write_stacks()
                    dumped = True
            except Exception:  # noqa: BLE001 - a beat missed; the next one tries again
                continue

    def stop(self) -> None:
        self._stop.set()

    def write_stacks(self) -> Path:
        path = self.stacks_dir / f"rank_{self.env.rank:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"rank {self.env.rank} on {self.host} at step {self.step}, {time.ctime()}:\n{stacks()}")
        return path

    def frozen(self) -> dict[int, str] | None:
        """After a collective timed out: ask every rank for its stacks, then read the counts twice, a few
        beats apart. Returns {rank: host} of the ranks whose heartbeat stood still (a rank whose beat was
        never seen counts as frozen, its host unknown), or None when the store cannot be read, which means
        that the rank hosting it (rank 0) is the frozen one."""
        try:
            store = self._store()
            store.set(f"{self.prefix}/dump", "1")
            first = self._read(store)
            time.sleep(3 * self.interval)
            second = self._read(store)
        except Exception:  # noqa: BLE001 - the store's host does not answer
            return None
        return {rank: (second.get(rank) or {}).get("host", "?") for rank in range(self.env.world_size)
                if rank != self.env.rank and (second.get(rank) is None or second[rank] == first.get(rank))}

    def _read(self, store: dist.Store) -> dict[int, dict]:
        keys = [f"{self.prefix}/{rank}" for rank in range(self.env.world_size)]
        present = {k for k in keys if store.check([k])}
        return {rank: json.loads(store.get(k)) for rank, k in enumerate(keys) if k in present}
