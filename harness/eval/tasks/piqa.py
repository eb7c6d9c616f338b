"""PIQA (validation: 1,838): the goal as a question, the two solutions as answers."""

from harness.eval.choice import Definition, Example


def example(row: dict) -> Example:
    choices = [row["sol1"], row["sol2"]]
    return Example([(f"Question: {row['goal']}\nAnswer:", " " + c) for c in choices], choices, int(row["label"]))


TASK = Definition("piqa", "piqa", norm=True, example=example).task()
