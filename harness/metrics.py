"""LogConfig's former home, for experiment files written before harness.spec. The records themselves are
harness.records (the rows) and harness.train.recorder (writing them)."""

from harness.spec import LogConfig

__all__ = ["LogConfig"]
