"""Where specs come from: experiment files, and a run directory's config.json."""

import runpy
from pathlib import Path
from typing import Literal

from harness.atomic import write_text
from harness.run_dir import RunDir
from harness.spec.convert import breaking_changes, describe, diff, from_json, to_json
from harness.spec.experiment import Experiment
from harness.spec.section import SpecError


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


def read_spec(run: RunDir) -> Experiment:
    """The spec a run directory holds (config.json, of any spec version)."""
    if not run.exists():
        raise SpecError(f"{run.path}: not a run directory (no {run.config.name})")
    return from_json(run.config.read_text(), str(run.config))


def load_specs(target: str | Path) -> list[Experiment]:
    """The spec(s) of an experiment file, or the spec a run directory holds."""
    return [read_spec(RunDir(target))] if Path(target).is_dir() else load_experiment_file(target)


def init_run_dir(run: RunDir, exp: Experiment, allow: Literal["compatible", "none"] = "compatible") -> dict:
    """Create the run directory for `exp`, or check it against the spec it holds; returns the fields
    that changed, as {"optim.lr": (old, new)}.

    allow="compatible" accepts changes that keep the checkpoints meaningful (the trainer's rule);
    allow="none" refuses any change (harness.submit's, unless asked). The spec is (re)written when it
    changed (in the current spec version).
    """
    changes = {}
    if run.exists():
        changes = diff(read_spec(run), exp)
        refused = changes if allow == "none" else breaking_changes(changes)
        if refused:
            raise SpecError(f"{run.path} holds a run with a different spec ({describe(refused)}); use another name "
                            "or run_dir" + (", or allow the change" if allow == "none" else ""))
    run.path.mkdir(parents=True, exist_ok=True)
    if changes or not run.exists():
        write_text(run.config, to_json(exp))
    return changes
