"""Tools around the harness: benchmarks (bench.py; sweep.py makes the sweep of hundreds of runs that
`bench sweep` times), the GPU acceptance command (acceptance.py), sampling (generate.py)."""
