"""Analysis of finished and running runs: plots and summary tables from metrics.jsonl and config.json.

Reads what the trainer writes; nothing in `harness/` imports this package.
"""
