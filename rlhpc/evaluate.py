"""`python -m rlhpc.evaluate`, the name job files and the README use; the code is rlhpc.outputs.evaluate."""

import sys

from rlhpc.outputs.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
