"""The benchmarks the harness scores, by name: what `eval.tasks`, `python -m harness.eval` and the
records (an `eval` row's `task`) call them. Adding a task is a module with a `TASK` and one line here.

The names and descriptions need no torch (harness.submit checks `eval.tasks` against them on a login
node); a task's module, which scores it, loads when the task is used.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass

TASKS: dict[str, tuple[str, str]] = {  # name -> (the module that scores it, what it is)
    "hellaswag_nanogpt": ("harness.eval.hellaswag", "HellaSwag validation (10,042), completion style as "
                          "build-nanogpt and the GPT-2 reproductions score it: acc by summed loss, acc_norm by "
                          "loss per token (OpenAI GPT-2 124M: 0.2859 / 0.2955)"),
    # The zero-shot suite: lm-evaluation-harness 0.4.13's definitions, its names; data: harness.prepare eval.
    "hellaswag": ("harness.eval.tasks.hellaswag", "HellaSwag validation (10,042) as lm-eval scores it: acc, "
                  "acc_norm (per character) (OpenAI GPT-2 124M: 0.2892 / 0.3114)"),
    "arc_easy": ("harness.eval.tasks.arc_easy", "ARC-Easy validation (570): acc, acc_norm"),
    "arc_challenge": ("harness.eval.tasks.arc_challenge", "ARC-Challenge validation (299): acc, acc_norm"),
    "piqa": ("harness.eval.tasks.piqa", "PIQA validation (1,838): acc, acc_norm"),
    "winogrande": ("harness.eval.tasks.winogrande", "WinoGrande XL validation (1,267), partial scoring: acc"),
    "openbookqa": ("harness.eval.tasks.openbookqa", "OpenBookQA validation (500): acc, acc_norm"),
    "sciq": ("harness.eval.tasks.sciq", "SciQ validation (1,000): acc, acc_norm"),
    "boolq": ("harness.eval.tasks.boolq", "BoolQ validation (3,270): acc"),
    "copa": ("harness.eval.tasks.copa", "COPA validation (100): acc"),
    "social_iqa": ("harness.eval.tasks.social_iqa", "Social IQa validation (1,954): acc"),
}
# A name for several tasks at once: `eval.tasks=["suite"]`, `harness.eval suite`, `harness.submit --eval suite`.
SUITES = {"suite": ("hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "openbookqa", "sciq", "boolq",
                    "copa", "social_iqa")}
# What scoring a task costs: its examples, and the model-input tokens per example over all its choices (measured
# on the validation split at a 1024-token context), for the estimate harness.submit prints.
SIZE = {"hellaswag_nanogpt": (10_042, 327), "hellaswag": (10_042, 313), "arc_easy": (570, 124),
        "arc_challenge": (299, 145), "piqa": (1_838, 71), "winogrande": (1_267, 42), "openbookqa": (500, 58),
        "sciq": (1_000, 435), "boolq": (3_270, 272), "copa": (100, 29), "social_iqa": (1_954, 94)}
# Scoring runs short, padded forward passes: assume half the MFU of a training step when turning FLOPs into time.
EVAL_MFU_RATIO = 0.5


def cost(tasks: list[str], limit: int, every: int, batch_tokens: int) -> dict:
    """What evaluating `tasks` (first `limit` examples each; 0: all) every `every` steps costs against training:
    forward tokens per evaluation, their share of the training FLOPs between evaluations (a forward pass is a
    third of a training step's FLOPs per token), and of the training time at EVAL_MFU_RATIO of its MFU."""
    tokens = sum(min(limit or n, n) * per for n, per in (SIZE[t] for t in expand(tasks) if t in SIZE))
    share = tokens / (3 * every * batch_tokens) if every else 0.0
    return {"tokens": tokens, "flops_share": share, "time_share": share / EVAL_MFU_RATIO}


@dataclass(frozen=True)
class Task:
    """How to score one benchmark. `load(data, limit, env)` returns its examples (the first `limit`; 0: all)
    from `data` (eval.tasks_data or --data; None: the task's default place), failing at once with an error
    that names the file when they are missing; every rank calls it. `score(model, examples, env, precision,
    batch)` is collective (each rank scores its share) and returns {"examples", "acc", "acc_norm"} (acc_norm
    None where the task has none)."""

    name: str
    load: Callable[..., list]  # (data: str | None, limit: int, env: DistEnv) -> examples
    score: Callable[..., dict]  # (model, examples, env: DistEnv, precision, batch: int) -> figures


def names() -> list[str]:
    return list(TASKS)


def expand(tasks: list[str] | tuple[str, ...]) -> list[str]:
    """Task names with each suite replaced by its tasks, once each, in order."""
    return list(dict.fromkeys(t for name in tasks for t in SUITES.get(name, (name,))))


def check(tasks: list[str]) -> list[str]:
    """Problems with `eval.tasks`, each naming the field."""
    known = ", ".join([*TASKS, *SUITES])
    return [f"eval.tasks: unknown task {t!r} (known: {known})" for t in tasks if t not in TASKS and t not in SUITES]


def get(name: str) -> Task:
    """The task called `name` (its module loads now)."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    return importlib.import_module(TASKS[name][0]).TASK
