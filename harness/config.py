"""The spec's former home: experiment files that import `from harness.config import Experiment, ...` keep
working. New code imports harness.spec."""

from harness.spec import *  # noqa: F403
from harness.spec import __all__  # noqa: F401
