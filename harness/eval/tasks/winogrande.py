"""WinoGrande (winogrande_xl validation: 1,267), partial scoring: each option fills the blank to make a
context of its own, and what is scored is the same continuation, the sentence after the blank. acc only."""

from harness.eval.choice import Definition, Example


def example(row: dict) -> Example:
    blank = row["sentence"].index("_")
    contexts = [row["sentence"][:blank] + option for option in (row["option1"], row["option2"])]
    after = row["sentence"][blank + 1:].strip()
    # acc_norm would divide by the contexts' lengths (lm-eval's choices here); it is not reported.
    return Example([(c, " " + after) for c in contexts], contexts, {"1": 0, "2": 1}[row["answer"]])


TASK = Definition("winogrande", "winogrande", norm=False, example=example).task()
