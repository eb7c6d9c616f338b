"""The command line of every command that takes a spec: `EXPERIMENT.py|RUN_DIR [--sweep-index N]
[--field value ...]`, every field overridable (simple-parsing builds the options from the dataclasses)."""

import argparse
import dataclasses
import sys
import types
import typing

import simple_parsing

from harness.spec.experiment import Experiment, resolve
from harness.spec.files import load_specs
from harness.spec.section import SpecError

NONE = ("None", "null")  # what resets an Optional field from the command line


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
    return [resolve(apply_overrides(prog, spec, rest)) for spec in specs], args


def apply_overrides(prog: str, spec: Experiment, argv: list[str]) -> Experiment:
    """`spec` with the `--field value` options in `argv` applied (`--field None` resets an Optional one)."""
    argv, nones = _split_nones(argv)
    spec = override_parser(prog, spec).parse_args(argv).exp
    return simple_parsing.replace(spec, dict.fromkeys(nones)) if nones else spec


def override_parser(prog: str, default: Experiment) -> simple_parsing.ArgumentParser:
    parser = simple_parsing.ArgumentParser(
        prog=prog, add_config_path_arg=False, allow_abbrev=False, nested_mode=simple_parsing.NestedMode.WITHOUT_ROOT,
        argument_generation_mode=simple_parsing.ArgumentGenerationMode.NESTED,
    )
    parser.add_arguments(Experiment, dest="exp", default=default)
    return parser


def _split_nones(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the options without `--field None|null` for Optional fields, those fields). simple-parsing would
    parse "None" as the field's inner type: the string 'None', or an error for an int."""
    rest, nones, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if not eq and i + 1 < len(argv):
            value = argv[i + 1]
        if arg.startswith("--") and value in NONE and _optional(name[2:]):
            nones.append(name[2:])
            i += 1 if eq else 2
        else:
            rest.append(arg)
            i += 1
    return rest, nones


def _optional(dotted: str) -> bool:
    """Whether the spec field `dotted` (e.g. "model.n_layer") admits None."""
    hint: object = Experiment
    for part in dotted.split("."):
        hints = typing.get_type_hints(hint) if dataclasses.is_dataclass(hint) else {}
        if part not in hints:
            return False
        hint = hints[part]
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
