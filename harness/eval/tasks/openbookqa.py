"""OpenBookQA (main, validation: 500; published tables use the test split, 500): the question stem alone as
the prompt."""

from harness.eval.choice import Definition, Example


def example(row: dict) -> Example:
    choices = row["choices"]["text"]
    gold = row["choices"]["label"].index(row["answerKey"].lstrip())
    return Example([(row["question_stem"], " " + c) for c in choices], choices, gold)


TASK = Definition("openbookqa", "openbookqa", norm=True, example=example).task()
