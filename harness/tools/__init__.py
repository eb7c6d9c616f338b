"""Tools around the harness: benchmarks (bench.py), the GPU acceptance command (acceptance.py),
sampling (generate.py)."""
