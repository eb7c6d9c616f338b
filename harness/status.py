"""`python -m harness.status`: the command's name; the code is harness.cluster.status."""

from harness.cluster.status import main

if __name__ == "__main__":
    main()
