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
}
ALIASES = {"hellaswag": "hellaswag_nanogpt"}  # harness.eval's subcommand before the registry


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


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def check(tasks: list[str]) -> list[str]:
    """Problems with `eval.tasks`, each naming the field."""
    return [f"eval.tasks: unknown task {t!r} (known: {', '.join(TASKS)})" for t in tasks if canonical(t) not in TASKS]


def get(name: str) -> Task:
    """The task called `name` (its module loads now)."""
    name = canonical(name)
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    return importlib.import_module(TASKS[name][0]).TASK
