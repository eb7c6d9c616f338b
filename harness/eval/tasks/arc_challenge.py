"""ARC-Challenge (validation: 299; published tables use the test split, 1,172): ARC-Easy's prompt."""

from harness.eval.choice import Definition
from harness.eval.tasks.arc_easy import example

TASK = Definition("arc_challenge", "arc_challenge", norm=True, example=example).task()
