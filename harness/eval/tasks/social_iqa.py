"""Social IQa (validation: 1,954): context and question as "Q: ... A:", three answers, `label` "1".."3". acc only."""

from harness.eval.choice import Definition, Example


def example(row: dict) -> Example:
    choices = [row["answerA"], row["answerB"], row["answerC"]]
    prompt = f"Q: {row['context']} {row['question']}\nA:"
    return Example([(prompt, " " + c) for c in choices], choices, int(row["label"]) - 1)


TASK = Definition("social_iqa", "social_iqa", norm=False, example=example).task()
