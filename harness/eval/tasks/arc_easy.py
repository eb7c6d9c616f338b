"""ARC-Easy (validation: 570; published tables use the test split, 2,376)."""

from harness.eval.choice import Definition, Example


def example(row: dict) -> Example:
    choices = row["choices"]["text"]
    gold = row["choices"]["label"].index(row["answerKey"])
    return Example([(f"Question: {row['question']}\nAnswer:", " " + c) for c in choices], choices, gold)


TASK = Definition("arc_easy", "arc_easy", norm=True, example=example).task()
