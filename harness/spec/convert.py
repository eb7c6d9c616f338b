"""The spec as data: its JSON form and versions, its types checked, its flat dotted form and diffs.

pydantic converts and checks (the rules are in `Section`); the messages name the field. A spec's JSON
carries `spec_version`; JSON of an older version (a run directory's config.json, a checkpoint's copy of
its spec) is read through `MIGRATIONS`, in memory: the file itself is never rewritten behind the user's
back (the trainer writes the current form only when the spec changes, which its start row records).
"""

import dataclasses
import functools
import hashlib
import json
import types
import typing
from collections.abc import Callable

from pydantic import TypeAdapter, ValidationError
from simple_parsing.utils import flatten_join

from harness.spec.eval import migrate_hellaswag
from harness.spec.experiment import RESUME_BREAKING, Experiment
from harness.spec.section import SpecError

SPEC_VERSION = 3


def _v1_to_v2(d: dict) -> dict:
    """Version 1 (no spec_version): HellaSwag had fields of its own; version 2 names tasks of the registry."""
    ev = dict(d.get("eval", {}))
    old = {k: ev.pop(k) for k in ("hellaswag_every", "hellaswag_limit", "hellaswag_data") if k in ev}
    return d | {"eval": ev | migrate_hellaswag(old)}


def _v2_to_v3(d: dict) -> dict:
    """Version 2: the task name "hellaswag" meant build-nanogpt's HellaSwag (an alias of hellaswag_nanogpt); from
    version 3 it is lm-evaluation-harness's, so a version-2 spec keeps what it scored under its own name."""
    ev = dict(d.get("eval", {}))
    if "tasks" in ev:
        ev["tasks"] = ["hellaswag_nanogpt" if t == "hellaswag" else t for t in ev["tasks"]]
    return {**d, "eval": ev}


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2, 2: _v2_to_v3}  # version -> the next version's form


@functools.cache
def _adapter() -> TypeAdapter:
    return TypeAdapter(Experiment)


def to_dict(exp: Experiment) -> dict:
    """The spec as JSON-ready values (tuples become lists)."""
    return _adapter().dump_python(exp, mode="json")


def to_json(exp: Experiment) -> str:
    return json.dumps({"spec_version": SPEC_VERSION, **to_dict(exp)}, indent=1) + "\n"


def from_dict(d: dict, where: str = "spec") -> Experiment:
    """A spec from its JSON form of any version; raises SpecError naming `where` and the field."""
    d = dict(d)
    version = d.pop("spec_version", 1)
    if not isinstance(version, int) or not 1 <= version <= SPEC_VERSION:
        raise SpecError(f"{where}: spec_version {version!r} is not one this code reads (1..{SPEC_VERSION}); "
                        "a newer harness wrote it")
    for v in range(version, SPEC_VERSION):
        d = MIGRATIONS[v](d)
    # Validated as JSON, where a list is a tuple's form (strict Python validation would refuse it).
    return _validate(lambda a: a.validate_json(json.dumps(d)), where)


def from_json(text: str, where: str = "spec") -> Experiment:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{where}: not JSON ({e})") from None
    if not isinstance(d, dict):
        raise SpecError(f"{where}: expected a JSON object, got {type(d).__name__}")
    return from_dict(d, where)


def check_types(exp: Experiment) -> Experiment:
    """`exp` with every field's type checked (an experiment file may have put anything anywhere)."""
    return _validate(lambda a: a.validate_python(exp), "spec")


def _validate(run: Callable[[TypeAdapter], Experiment], where: str) -> Experiment:
    try:
        return run(_adapter())
    except ValidationError as e:
        raise SpecError("\n".join(dict.fromkeys(_message(err, where) for err in e.errors()))) from None


def _message(err: dict, where: str) -> str:
    """"optim.lr: expected float, got '1e-3'" from one of pydantic's errors (whose location may go on into
    the branches of a union: those are the same field)."""
    path, hint = _field_path(err["loc"])
    prefix = "" if where == "spec" else f"{where}: "
    if err["type"] == "unexpected_keyword_argument":
        return f"{prefix}{path}: unknown field"
    if err["type"] == "missing" and hint is None:
        return f"{prefix}{path}: missing"
    value = err.get("input")
    return f"{prefix}{path}: expected {_type_name(hint)}, got {type(value).__name__} {value!r}"


def _field_path(loc: tuple) -> tuple[str, object]:
    """The dotted field name that `loc` starts with, and that field's type (None for an unknown field).
    What follows the field in `loc` (a union's branch, a list's index) belongs to the same field."""
    cls, names, hint = Experiment, [], None
    for part in loc:
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else None
        if hints is None or not isinstance(part, str):
            break
        names.append(part)
        if part not in hints:  # an unknown field
            return ".".join(names), None
        cls = hint = hints[part]
    return ".".join(names), hint


def _type_name(hint: object) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")


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


def spec_hash(exp: Experiment) -> str:
    """Identifies the whole spec: any change to any field changes it."""
    return hashlib.sha256(json.dumps(flatten(exp), sort_keys=True).encode()).hexdigest()[:16]
