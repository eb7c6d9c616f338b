"""The hooks through which a component acts around the training step (OLMo-core's callbacks, trimmed to
what this loop needs). The loop (harness/train/loop.py) calls, in the order of its component list:

    on_start(t)              before the first step of a start; a Stop ends the start there
    after_step(t, pending)   after every step; `pending` is a Stop an earlier component asked for (its
                             checkpoint comes first), and a component may ask for one itself
    on_stop(t, stop)         when the start ends, for any reason
    state_dict() / load_state_dict(d)   what it keeps in every checkpoint (shared by all ranks)

`t` is the trainer: its spec (`t.exp`), process group (`t.env`), run directory (`t.run_dir`), model, state
(`t.state.step`), step timer (`t.timer`) and recorder (`t.recorder.write(row)`). Every hook runs on every
rank at the same step, so a collective inside one is safe; decisions that differ between ranks must be
agreed first (harness.distributed.any_ranks).
"""

from typing import Any

from harness.records import Stop


class Component:
    """A component that does nothing; subclasses override the hooks they need."""

    def on_start(self, t: Any) -> Stop | None:
        return None

    def after_step(self, t: Any, pending: Stop | None) -> Stop | None:
        return None

    def on_stop(self, t: Any, stop: Stop) -> None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None
