"""The step timer: how long the training steps took, apart from evaluations and saves, and how long this
rank's own forward passes took (for naming stragglers)."""

import contextlib
import time
from collections.abc import Iterator

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
