"""BoolQ (validation: 3,270): passage, question, "no" or "yes". acc only. The data is google/boolq's (a bool
`answer`); SuperGLUE's copy, which lm-eval reads, has the same rows with `label` = int(answer)."""

from harness.eval.choice import Definition, Example

CHOICES = ["no", "yes"]


def example(row: dict) -> Example:
    gold = int(row["label"]) if "label" in row else int(bool(row["answer"]))
    prompt = f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:"
    return Example([(prompt, " " + c) for c in CHOICES], CHOICES, gold)


TASK = Definition("boolq", "boolq", norm=False, example=example).task()
