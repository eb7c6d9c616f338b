"""`python -m harness.prepare`: the command's name; the code is harness.data.prepare."""

from harness.data.prepare import main

if __name__ == "__main__":
    main()
