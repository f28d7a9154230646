"""`python -m rlhpc.doctor`, the name job files and the README use; the code is rlhpc.slurm.doctor."""

import sys

from rlhpc.slurm.doctor import main

if __name__ == "__main__":
    sys.exit(main())
