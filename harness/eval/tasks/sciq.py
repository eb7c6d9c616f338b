"""SciQ (validation: 1,000; published tables use the test split, 1,000): the support paragraph, the question,
three distractors and the correct answer, which is always the fourth choice."""

from harness.eval.choice import Definition, Example


def example(row: dict) -> Example:
    prompt = f"{row['support'].lstrip()}\nQuestion: {row['question']}\nAnswer:"
    choices = [row["distractor1"], row["distractor2"], row["distractor3"], row["correct_answer"]]
    return Example([(prompt, " " + c) for c in choices], choices, 3)


TASK = Definition("sciq", "sciq", norm=True, example=example).task()
