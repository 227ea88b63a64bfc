"""Wall time and peak memory of a command, for the budgets the README states.

    .venv/bin/python benchmarks/budget.py -- dvc repro --force papers/stochastic_depth

Peak memory is the largest resident set of any process the command started (getrusage of the
waited-for children), which for `dvc repro` is the training process.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    command = argv[1:] if argv and argv[0] == "--" else argv
    if not command:
        sys.exit("usage: budget.py -- COMMAND [ARGS...]")
    start = time.perf_counter()
    code = subprocess.call(command)
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"\nbudget: `{' '.join(command)}` exit {code}, wall {wall / 60:.1f} min, "
        f"peak memory {peak_mib / 1024:.2f} GiB, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}, load average now {os.getloadavg()[0]:.2f}"
    )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
