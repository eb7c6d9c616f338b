"""`python -m harness.bench`: the command's name; the code is harness.tools.bench."""

from harness.tools.bench import main

if __name__ == "__main__":
    main()
