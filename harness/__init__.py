"""harness: pretrain GPT-2 on a SLURM cluster with exact, preemption-proof resume."""
