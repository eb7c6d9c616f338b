"""Before a run is queued or starts: its spec checked against the world outside it (the prepared data,
the init_from source, the eval tasks), and what the spec left unsaid filled in from there. Reads JSON
only (manifest.json, a source's config.json or meta.json): no torch, so harness.submit runs it too.
"""

import dataclasses
import importlib.util
from pathlib import Path

from harness.cluster import branches
from harness.data.eval_data import DEFAULT_DIR, eval_manifest
from harness.data.manifest import DataError, load_manifest
from harness.eval import registry
from harness.model.sources import check_init_from, fill_from_source
from harness.run_dir import RunDir
from harness.spec import Experiment, SpecError, tokens_per_pass, validate


def fill(exp: Experiment) -> tuple[Experiment, dict[str, object]]:
    """`exp` with what its sources say filled in, and what was filled ({"model.unpadded_vocab": 50257}).
    A run that has checkpoints of its own reads no source."""
    if RunDir(exp.run_dir).newest_checkpoint_step() is not None:
        return exp, {}
    model = fill_from_source(exp.model)
    if not model:
        return exp, {}
    return dataclasses.replace(exp, model=dataclasses.replace(exp.model, **model)), {f"model.{k}": v
                                                                                       for k, v in model.items()}


def check(exp: Experiment, world_size: int, branch_may_wait: bool = False) -> list[str]:
    """Problems between `exp` and its inputs, each naming the field (a branch's source checkpoint may be yet to
    be written with `branch_may_wait`: a submission together with its trunk)."""
    errors = registry.check(exp.eval.tasks) + _check_data(exp, tokens_per_pass(exp, world_size))
    errors += branches.check_source(exp, world_size, branch_may_wait)
    if exp.log.export_hf and not all(importlib.util.find_spec(m) for m in ("transformers", "blobfile")):
        errors.append("log.export_hf: needs transformers and blobfile (pip install -e '.[export]')")
    if exp.eval.tasks_every and set(registry.SUITES["suite"]) & set(registry.expand(exp.eval.tasks)):
        try:  # the suite's data, prepared by harness.prepare eval (hellaswag_nanogpt checks its own at start-up)
            eval_manifest(Path(exp.eval.tasks_data) if exp.eval.tasks_data else DEFAULT_DIR)
        except DataError as e:
            errors.append(f"eval.tasks_data: {e}")
    if exp.model.init_from and RunDir(exp.run_dir).newest_checkpoint_step() is None:
        # Only a fresh run reads its source: once it has a checkpoint of its own, that wins.
        errors += [f"model.{problem}" for problem in check_init_from(exp.model)]
    return errors


def ready(exp: Experiment, world_size: int, check_inputs: bool = True,
          branch_may_wait: bool = False) -> tuple[Experiment, dict[str, object]]:
    """`exp` filled in and checked for a run on `world_size` ranks (and what was filled); raises SpecError
    naming every field at fault. Without `check_inputs`, only the spec itself (a dry run before the data is
    prepared)."""
    exp, filled = fill(exp) if check_inputs else (exp, {})
    validate(exp, world_size)
    if check_inputs and (errors := check(exp, world_size, branch_may_wait)):
        raise SpecError("\n".join(errors))
    return exp, filled


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
