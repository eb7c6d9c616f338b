"""The spec: every setting of a run, as dataclasses, and the checks, conversions and command line of them.

    from harness.spec import Experiment, ModelConfig, TrainConfig, ...   # what experiment files import

Imports no torch (nor anything else of the harness but the run directory's layout), so that reading,
checking and submitting a spec costs a login node a fraction of a second.
"""

from harness.spec.checkpoint import CheckpointConfig
from harness.spec.cli import parse_cli, parse_command, spec_parser
from harness.spec.cluster import ClusterConfig
from harness.spec.convert import (
    breaking_changes,
    check_types,
    describe,
    diff,
    flatten,
    from_dict,
    from_json,
    spec_hash,
    to_dict,
    to_json,
)
from harness.spec.data import DataConfig
from harness.spec.eval import EvalConfig
from harness.spec.experiment import DERIVED, RESUME_BREAKING, Experiment, resolve
from harness.spec.files import init_run_dir, load_experiment_file, load_specs, read_spec
from harness.spec.log import LogConfig
from harness.spec.model import PRESETS, ModelConfig
from harness.spec.optim import OptimConfig, ScheduleConfig, lr_at
from harness.spec.section import SpecError
from harness.spec.train import TrainConfig
from harness.spec.validate import tokens_per_pass, validate

__all__ = [
    "DERIVED", "PRESETS", "RESUME_BREAKING", "CheckpointConfig", "ClusterConfig", "DataConfig", "EvalConfig",
    "Experiment", "LogConfig", "ModelConfig", "OptimConfig", "ScheduleConfig", "SpecError", "TrainConfig",
    "breaking_changes", "check_types", "describe", "diff", "flatten", "from_dict", "from_json", "init_run_dir",
    "load_experiment_file", "load_specs", "lr_at", "parse_cli", "parse_command", "read_spec", "resolve", "spec_hash",
    "spec_parser", "to_dict", "to_json", "tokens_per_pass", "validate",
]
