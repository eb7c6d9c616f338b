"""HellaSwag as lm-eval scores it (GPT-2 124M: acc 0.2892 / acc_norm 0.3114): the activity label and the
two context halves, the second capitalised, WikiHow's bracket artefacts removed from context and endings."""

import re

from harness.eval.choice import Definition, Example


def preprocess(text: str) -> str:
    """lm-eval's clean-up of HellaSwag text: strip, a " [title]" becomes ". ", other [bracketed] tags go, and
    then a double space becomes one (a single pass)."""
    text = re.sub(r"\[.*?\]", "", text.strip().replace(" [title]", ". "))
    return text.replace("  ", " ")


def example(row: dict) -> Example:
    # str.capitalize lowers the rest of ctx_b too, as lm-eval's does.
    query = preprocess(row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize())
    choices = [preprocess(e) for e in row["endings"]]
    return Example([(query, " " + c) for c in choices], choices, int(row["label"]))


TASK = Definition("hellaswag", "hellaswag", norm=True, example=example).task()
