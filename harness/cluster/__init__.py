"""The cluster: submitting jobs (submit.py), what each node runs (job.py), Slurm's state read in one place
(slurm.py), run status and failure triage, node health (preflight, stragglers), and the checks of a
spec's inputs before anything is queued (inputs.py).

`from harness.cluster import ClusterConfig, TorchrunJob` keeps working for experiment files and for jobs
that submitit pickled before these moved (a pickle names the class by where it was defined then).
"""

from harness.cluster.job import TorchrunJob
from harness.spec import ClusterConfig

__all__ = ["ClusterConfig", "TorchrunJob"]
