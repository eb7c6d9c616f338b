"""`python -m harness.generate`: the command's name; the code is harness.tools.generate."""

from harness.tools.generate import main

if __name__ == "__main__":
    main()
