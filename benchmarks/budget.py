"""Wall time and peak memory of a command, for the budgets the README states.

    .venv/bin/python benchmarks/budget.py -- dvc repro papers/stochastic_depth
    .venv/bin/python benchmarks/budget.py --slow-class -- dvc repro papers/stochastic_depth

Peak memory is the largest resident set of any process the command started (getrusage of the
waited-for children), which for `dvc repro` is the training process. `--slow-class` measures the
budgets' reference CPU class on a faster machine: torch, oneDNN and MKL limited to AVX2, so
`trainer.precision: auto` resolves to fp32 (common.training.resolve_precision) as it does there.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SLOW_CLASS = {  # a 2-core AVX2 CPU without bf16
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


def cpu_class(env: dict[str, str]) -> str:
    """The CPU class a command runs as: forced to AVX2, or what /proc/cpuinfo offers."""
    if env.get("ATEN_CPU_CAPABILITY") in ("avx2", "default"):
        return "avx2 (forced: ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS)"
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return "avx512 with bf16"
    return "avx512 without bf16" if "avx512f" in flags else "avx2"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow-class", action="store_true", help="limit to AVX2 and fp32")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("usage: budget.py [--slow-class] -- COMMAND [ARGS...]")
    env = {**os.environ, **(SLOW_CLASS if args.slow_class else {})}
    start = time.perf_counter()
    code = subprocess.call(command, env=env)
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"\nbudget: `{' '.join(command)}` exit {code}, wall {wall / 60:.1f} min, "
        f"peak memory {peak_mib / 1024:.2f} GiB, {os.cpu_count()} cores, CPU class "
        f"{cpu_class(env)}, load average now {os.getloadavg()[0]:.2f}"
    )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
