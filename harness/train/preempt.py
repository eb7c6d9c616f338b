"""Preemption and time limits: a signal only sets a flag; all ranks agree on it, then all save together.

Slurm sends the preemption/time-limit signal (USR2, `--signal=USR2@lead`) to every process of the
job step, and SIGTERM when it cancels or requeues a job. A rank never acts on its own view: it may
see the signal a step later than another rank, so the ranks decide through a collective at the same
step (see `harness.distributed.any_rank`), finish that step, save one checkpoint and exit cleanly.
"""

import signal
import sys

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Remembers the first stop signal this process received."""

    def __init__(self) -> None:
        self.signal: str | None = None
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum).name
            print(f"received {self.signal}: will checkpoint and stop at the next agreed step",
                  file=sys.stderr, flush=True)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once

    @property
    def requested(self) -> bool:
        return self.signal is not None
