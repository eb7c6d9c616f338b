"""The experiment spec: one `Experiment` composed of each component's own config dataclass.

An experiment is a Python file in experiments/ that defines `spec = Experiment(...)`, or
`sweep = [Experiment(...), ...]` for several runs submitted as one job array. Any field can be
overridden on the command line (`--optim.lr 3e-4`; `--help` lists them). The resolved spec is
written to RUN_DIR/config.json, and a resumed run checks itself against it.
"""

import argparse
import dataclasses
import hashlib
import json
import re
import runpy
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import simple_parsing
from simple_parsing.helpers.serialization import from_dict, to_dict
from simple_parsing.utils import flatten_join

from harness import pretrained
from harness.checkpoint import CheckpointConfig
from harness.cluster import ClusterConfig
from harness.data import DataConfig, DataError, load_manifest
from harness.eval import EvalConfig
from harness.metrics import LogConfig
from harness.model import ModelConfig
from harness.optim import OptimConfig, ScheduleConfig
from harness.run_dir import RunDir


@dataclass
class TrainConfig:
    """The training loop: batch arithmetic, precision, devices, and what to do when things go wrong."""

    batch_tokens: int = 524_288  # tokens per optimizer step over all ranks (2**19, GPT-3's ~0.5M)
    micro_batch: int | Literal["auto"] = 64  # sequences per rank per pass ("auto": largest that fits the GPU)
    memory_fraction: float = 0.85  # micro_batch="auto": the share of GPU memory a training step may plan for
    max_micro_batch: int = 0  # micro_batch="auto": never more sequences per pass than this (0: no cap; CPU too)
    seq_len: int = 1024  # tokens per sequence (T)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when torch sees a GPU
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # process-group backend (auto: NCCL on GPU, gloo on CPU)
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"  # autocast precision (auto: bf16 on CUDA, fp32 on CPU)
    compile: bool = False  # torch.compile the model for training (evaluation uses the plain module)
    deterministic: bool = False  # deterministic kernels only: bit-identical resumes on GPUs too, at some speed
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient norm stops the run or skips the step
    max_restarts: int = 3  # torchrun restarts the workers this often after a crash (preemptions do not count)
    collective_timeout_min: float = 10.0  # a rank stuck this long in a collective fails the job
    stop_check_every: int = 10  # steps between the ranks' agreement on a stop signal (a tiny CPU all-reduce)
    peak_tflops: float = 0.0  # per-device peak for MFU (0: known GPUs' bf16 peak; none on CPU)

    def check(self) -> list[str]:
        """Problems with these settings, each naming its field."""
        mb = self.micro_batch
        return [msg for bad, msg in [
            (self.batch_tokens <= 0, f"batch_tokens: must be positive, got {self.batch_tokens}"),
            (mb != "auto" and mb <= 0, f"micro_batch: must be positive or 'auto', got {mb}"),
            (not 0 < self.memory_fraction <= 1, f"memory_fraction: must be in (0, 1], got {self.memory_fraction}"),
            (self.max_micro_batch < 0, f"max_micro_batch: must be >= 0 (0 = no cap), got {self.max_micro_batch}"),
            (self.seq_len <= 0, f"seq_len: must be positive, got {self.seq_len}"),
            (self.stop_check_every <= 0, f"stop_check_every: must be positive, got {self.stop_check_every}"),
            (self.max_restarts < 0, f"max_restarts: must be >= 0, got {self.max_restarts}"),
            (self.collective_timeout_min <= 0,
             f"collective_timeout_min: must be positive, got {self.collective_timeout_min}"),
        ] if bad]


@dataclass
class Experiment:
    """One training run."""

    name: str = "experiment"  # run name: the Slurm job name and the default run directory log/<name>
    run_dir: str = ""  # checkpoints, metrics and logs (empty: log/<name>)
    seed: int = 1337  # seeds initialisation, data order and samples
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def check(self) -> list[str]:
        """Problems with the run's own fields (its components check theirs)."""
        ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name) is not None
        return [] if ok else [f"name: {self.name!r} must be letters, digits, '.', '_' or '-' (it names the job "
                              "and the run directory)"]


class SpecError(ValueError):
    """An invalid spec; the message starts with the field (or file) at fault."""


# Fields whose change makes a checkpoint meaningless for the new spec (the data itself is checked
# through the reader state's dataset fingerprint, as are world size and batch shape).
RESUME_BREAKING = ("model.", "train.seq_len", "seed", "data.dir", "data.shuffle")


# ----------------------------------------------------------------------------- loading


def load_experiment_file(path: str | Path) -> list[Experiment]:
    """The spec(s) an experiment file defines, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: experiment file not found")
    try:
        namespace = runpy.run_path(str(path), run_name="__experiment__")
    except SyntaxError as e:
        raise SpecError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:
        raise SpecError(f"{path}: the experiment file raised {type(e).__name__}: {e}") from e
    if "sweep" in namespace:
        specs = list(namespace["sweep"])
        if not specs:
            raise SpecError(f"{path}: `sweep` is empty")
    elif "spec" in namespace:
        specs = [namespace["spec"]]
    else:
        raise SpecError(f"{path}: defines neither `spec = Experiment(...)` nor `sweep = [...]`")
    for s in specs:
        if not isinstance(s, Experiment):
            raise SpecError(f"{path}: expected Experiment objects, found {type(s).__name__}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SpecError(f"{path}: sweep runs need distinct names, got {names}")
    return specs


def to_json(exp: Experiment) -> str:
    return json.dumps(to_dict(exp), indent=1) + "\n"


def from_json(text: str, where: str = "spec") -> Experiment:
    d = json.loads(text)
    extra = _unknown_keys(Experiment, d)
    if extra:
        raise SpecError(f"{where}: unknown field {extra[0]}")
    return from_dict(Experiment, d)


def _unknown_keys(cls: type, d: dict, prefix: str = "") -> list[str]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = []
    for k, v in d.items():
        if k not in fields:
            out.append(prefix + k)
        elif isinstance(v, dict) and dataclasses.is_dataclass(typing.get_type_hints(cls)[k]):
            out += _unknown_keys(typing.get_type_hints(cls)[k], v, f"{prefix}{k}.")
    return out


def spec_parser(prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """What every command that takes a spec reads in front of the spec's fields: the experiment file
    or run directory and --sweep-index. A command adds its own flags to it; everything it does not
    know goes on to the fields' parser (simple-parsing)."""
    p = argparse.ArgumentParser(prog=prog, description=description, add_help=False, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", metavar="EXPERIMENT.py|RUN_DIR", help="an experiment file or a run directory")
    p.add_argument("--sweep-index", type=int, metavar="N", help="one run of a sweep")
    p.add_argument("-h", "--help", action="store_true", help="this help, then every spec field with its doc")
    return p


def parse_cli(argv: list[str], prog: str, multiple: bool = False) -> list[Experiment]:
    """`EXPERIMENT.py|RUN_DIR [--sweep-index N] [--field value ...]` -> the resolved spec(s).

    With `multiple`, every spec of a sweep is returned (each with the overrides); otherwise a sweep
    needs --sweep-index.
    """
    return parse_command(argv, prog, spec_parser(prog), multiple)[0]


def parse_command(argv: list[str], prog: str, front: argparse.ArgumentParser,
                  multiple: bool = False) -> tuple[list[Experiment], argparse.Namespace]:
    """`parse_cli` for a command with flags of its own, added to `front` (a `spec_parser`): returns
    the spec(s) and the parsed flags."""
    args, rest = front.parse_known_args(argv)
    if args.help:
        specs = load_specs(args.target) if args.target else [Experiment()]
        print(front.format_help())
        override_parser(prog, specs[0]).print_help()
        sys.exit(0)
    if not args.target:
        raise SpecError(f"usage: {prog} EXPERIMENT.py|RUN_DIR [--field value ...]   ({prog} --help lists fields)")
    specs = load_specs(args.target)
    if args.sweep_index is not None:
        if not 0 <= args.sweep_index < len(specs):
            raise SpecError(f"--sweep-index {args.sweep_index}: {args.target} defines {len(specs)} runs")
        specs = [specs[args.sweep_index]]
    if len(specs) > 1 and not multiple:
        raise SpecError(f"{args.target} defines a sweep of {len(specs)} runs; pick one with --sweep-index N")
    return [resolve(override_parser(prog, spec).parse_args(rest).exp) for spec in specs], args


def load_specs(target: str | Path) -> list[Experiment]:
    """The spec(s) of an experiment file, or the spec a run directory holds."""
    return [RunDir(target).read_spec()] if Path(target).is_dir() else load_experiment_file(target)


def override_parser(prog: str, default: Experiment) -> simple_parsing.ArgumentParser:
    parser = simple_parsing.ArgumentParser(
        prog=prog, add_config_path_arg=False, allow_abbrev=False, nested_mode=simple_parsing.NestedMode.WITHOUT_ROOT,
        argument_generation_mode=simple_parsing.ArgumentGenerationMode.NESTED,
    )
    parser.add_arguments(Experiment, dest="exp", default=default)
    return parser


# Fields that resolve() derives from others: a difference in them is a difference in what they come
# from, so comparisons of specs (analysis.compare's groups, the report's "differs in") leave them out.
DERIVED = ("optim.scaled_lr", "optim.scaled_min_lr")


def resolve(exp: Experiment) -> Experiment:
    """Fill in what defaults to something else (run dir, model sizes from the preset) and what is derived
    (the learning rates after optim.lr_scaling). Resolving twice changes nothing."""
    try:
        model = exp.model.resolved()
    except ValueError as e:
        raise SpecError(str(e)) from None
    optim = exp.optim
    if (lrs := optim.scaled(exp.schedule.min_lr, exp.train.batch_tokens)) is not None:
        optim = dataclasses.replace(optim, scaled_lr=lrs[0], scaled_min_lr=lrs[1])
    return dataclasses.replace(exp, run_dir=exp.run_dir or f"log/{exp.name}", model=model, optim=optim)


# ----------------------------------------------------------------------------- validation


def validate(exp: Experiment, world_size: int, check_data: bool = True) -> None:
    """Everything that can be checked before a run starts; raises SpecError naming the field.

    Each component checks its own fields (`check()`); here only what relates fields of different
    components: the batch arithmetic for this world size, the schedule against the optimizer, and
    the data against the model."""
    _check_types(exp, "")
    t, o, s, e = exp.train, exp.optim, exp.schedule, exp.eval
    # With micro_batch="auto" the size is chosen at start; the arithmetic must hold for one sequence.
    auto = t.micro_batch == "auto"
    per_pass = (1 if auto else max(t.micro_batch, 0)) * max(t.seq_len, 0) * world_size
    what = "seq_len x world_size" if auto else "micro_batch x seq_len x world_size"
    numbers = f"{t.seq_len} x {world_size}" if auto else f"{t.micro_batch} x {t.seq_len} x {world_size}"
    across = {  # problems across components, reported after the component they name
        "train": [msg for bad, msg in [
            (t.seq_len > exp.model.block_size, f"seq_len: {t.seq_len} is longer than model.block_size="
                                               f"{exp.model.block_size}"),
            (per_pass > 0 and t.batch_tokens > 0 and t.batch_tokens % per_pass != 0,
             f"batch_tokens: {t.batch_tokens:,} is not divisible by {what} = {numbers} = {per_pass:,}"),
        ] if bad],
        "schedule": [] if 0 <= s.min_lr <= o.lr else [f"min_lr: must be in [0, optim.lr={o.lr}], got {s.min_lr}"],
        "optim": [f"{name}: {value} is derived (optim.lr and schedule.min_lr after optim.lr_scaling={o.lr_scaling!r} "
                  f"at train.batch_tokens={t.batch_tokens:,}: {want}); set those instead"
                  for name, value, want in zip(("scaled_lr", "scaled_min_lr"), (o.scaled_lr, o.scaled_min_lr),
                                               o.scaled(s.min_lr, t.batch_tokens) or (None, None), strict=True)
                  if value is not None and value != want],
        "eval": [] if not e.val_every or per_pass <= 0 or (e.val_tokens > 0 and e.val_tokens % per_pass == 0) else [
            f"val_tokens: {e.val_tokens:,} must be a positive multiple of {what} = {per_pass:,}"],
    }
    errors = exp.check()
    for f in dataclasses.fields(exp):
        part = getattr(exp, f.name)
        if dataclasses.is_dataclass(part):
            errors += [f"{f.name}.{problem}" for problem in part.check() + across.get(f.name, [])]
    if check_data and not errors:
        errors += _check_data(exp, per_pass)
    if check_data and not errors and exp.model.init_from and RunDir(exp.run_dir).newest_checkpoint_step() is None:
        # Only a fresh run reads its source: once it has a checkpoint of its own, that wins.
        errors += [f"model.{problem}" for problem in pretrained.check(exp.model)]
    if errors:
        raise SpecError("\n".join(errors))


def _check_data(exp: Experiment, per_pass: int) -> list[str]:
    try:
        manifest = load_manifest(exp.data.dir)
    except DataError as e:
        return [f"data.dir: {e}"]
    errors = []
    vocab = manifest["tokenizer"]["vocab_size"]
    if vocab > exp.model.predicted_vocab:
        field = "unpadded_vocab" if exp.model.unpadded_vocab else "vocab_size"
        errors.append(f"model.{field}: {exp.model.predicted_vocab} is smaller than the data's vocabulary ({vocab})")
    train = manifest["splits"].get("train", {}).get("tokens", 0)
    if train < per_pass + 1:
        errors.append(f"data.dir: {exp.data.dir} has {train:,} train tokens, fewer than one batch ({per_pass:,})")
    if exp.eval.val_every:
        val = manifest["splits"].get("val", {}).get("tokens", 0)
        if val < exp.eval.val_tokens + 1:
            errors.append(f"eval.val_tokens: {exp.eval.val_tokens:,} is more than the {val:,} val tokens in "
                          f"{exp.data.dir} (lower it, or set eval.val_every=0)")
    return errors


def _check_types(obj: object, prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                raise SpecError(f"{prefix}{f.name}: expected {hint.__name__}, got {type(value).__name__}")
            _check_types(value, f"{prefix}{f.name}.")
        elif not _matches(value, hint):
            raise SpecError(f"{prefix}{f.name}: expected {_type_name(hint)}, got {type(value).__name__} {value!r}")


def _matches(value: object, hint: object) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, tuple | list) and len(value) == len(args) and all(map(_matches, value, args))
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: object) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in typing.get_args(hint))
    # Only plain classes: tuple[float, float] and Literal[...] have the bare "tuple"/"Literal" as __name__.
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


# ----------------------------------------------------------------------------- comparing specs


def flatten(exp: Experiment) -> dict[str, object]:
    """{"optim.lr": 0.0006, ...}: the spec as one level of dotted names (wandb's config, diffs)."""
    return flatten_join(to_dict(exp), sep=".")


def diff(old: Experiment, new: Experiment) -> dict[str, tuple[object, object]]:
    """Fields whose values differ, as {"optim.lr": (old, new)}."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def breaking_changes(changes: dict[str, tuple[object, object]]) -> dict[str, tuple[object, object]]:
    return {k: v for k, v in changes.items() if k.startswith(RESUME_BREAKING)}


def describe(changes: dict[str, tuple[object, object]]) -> str:
    return ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())


def _digest(fields: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def spec_hash(exp: Experiment) -> str:
    """Identifies the whole spec: any change to any field changes it."""
    return _digest(flatten(exp))
