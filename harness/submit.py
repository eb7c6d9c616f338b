"""`python -m harness.submit`: the command's name; the code is harness.cluster.submit.

TorchrunJob stays importable here: jobs that submitit pickled when it was defined in this module name it so.
"""

from harness.cluster.job import TorchrunJob
from harness.cluster.submit import main

__all__ = ["TorchrunJob", "main"]

if __name__ == "__main__":
    main()
