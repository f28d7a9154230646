"""`python -m rlhpc.compare`, the name job files and the README use; the code is rlhpc.outputs.compare."""

import sys

from rlhpc.outputs.compare import main

if __name__ == "__main__":
    sys.exit(main())
