"""The zero-shot suite: one module per task, each lm-evaluation-harness 0.4.13's zero-shot definition of it (its
task YAML and utils: prompt, choices, target delimiter " ", metrics) as a `harness.eval.choice.Definition`."""
