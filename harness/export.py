"""`python -m harness.export`: the command's name; the code is harness.tools.export."""

from harness.tools.export import main

if __name__ == "__main__":
    main()
