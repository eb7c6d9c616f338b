"""The step timer: how long the training steps took, apart from evaluations and saves, and how long this
rank's own forward passes took (for naming stragglers); and the start-up clock of a start."""

import contextlib
import os
import time
from collections.abc import Iterator

import psutil
import torch


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


class StartupClock:
    """How the seconds of a start before its first step were spent, for its start row: each phase ends
    at a mark; the first phases are read from the processes' own start times (the torchrun agent, the
    worker). The first step itself (compilation, warm-up) and the preflight have rows of their own."""

    PHASES = ("launch", "torchrun", "imports", "process_group", "build", "restore")

    def __init__(self) -> None:
        me = psutil.Process()
        self.worker_started = me.create_time()
        # Under torchrun the parent is its agent: its own start-up (importing torch) and the rendezvous come
        # between the allocation's start and this worker's.
        self.agent_started = me.parent().create_time() if "TORCHELASTIC_RUN_ID" in os.environ else None
        # A worker group restarted by torchrun within the allocation starts from its own process: the agent's
        # start-up was the first attempt's.
        self.restarted = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") not in ("", "0")
        self.marks: dict[str, float] = {"imports": time.time()}

    def mark(self, phase: str) -> None:
        self.marks[phase] = time.time()

    def breakdown(self, allocated_at: float) -> dict[str, float]:
        """{phase: seconds}, each phase from the end of the one before, from the allocation's start (for a
        worker group that torchrun restarted, from its own start) to the last mark."""
        ends = dict(self.marks)
        if not self.restarted:
            ends["launch"] = self.agent_started or self.worker_started
            if self.agent_started:
                ends["torchrun"] = self.worker_started
        out, before = {}, self.worker_started if self.restarted else allocated_at
        for phase in self.PHASES:
            if phase in ends:
                out[phase] = round(max(0.0, ends[phase] - before), 3)
                before = ends[phase]
        return out
