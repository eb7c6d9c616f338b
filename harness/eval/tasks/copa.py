"""COPA (SuperGLUE, validation: 100): the premise without its full stop, joined to the choice by "because"
(a cause) or "therefore" (an effect); the choice starts lower-case. acc only.

lm-eval's choices already start with a space and its target delimiter adds another, so the scored
continuation begins with two spaces; so does ours, to score what lm-eval scores."""

from harness.eval.choice import Definition, Example

CONNECTORS = {"cause": "because", "effect": "therefore"}


def example(row: dict) -> Example:
    context = row["premise"].strip()[:-1] + " " + CONNECTORS[row["question"]]
    choices = [" " + c[0].lower() + c[1:] for c in (row["choice1"], row["choice2"])]
    return Example([(context, " " + c) for c in choices], choices, int(row["label"]))


TASK = Definition("copa", "copa", norm=False, example=example).task()
