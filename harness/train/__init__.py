"""Training: the loop (loop.py) and the components around its step (recorder, node health, evaluation,
the save policy, the non-finite rule), checkpoints, the optimizer, preemption signals.

    python -m harness.train EXPERIMENT.py|RUN_DIR [--field value ...]
"""
