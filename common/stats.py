"""Intervals over seeds, which the key tables' verdicts read (common.table.VERDICT_RULE).

A mean is judged by its 95% Student-t interval; a paper's median of N by the smallest and
largest of our N seeds, a distribution-free interval of the median; a paper's best of N is
compared like with like, as a point. An effect of two arms trained on the same seeds is one value
per seed (their paired difference or saving), so its interval is that of the paired values.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy import stats

LEVEL = 0.95


def t_quantile(n: int) -> float:
    """The two-sided 95% quantile of Student's t with n − 1 degrees of freedom."""
    return float(stats.t.ppf(0.5 + LEVEL / 2, n - 1))


def interval(values: Sequence[float], statistic: str = "mean") -> tuple[float, float]:
    """The interval a verdict reads: of the mean (t, 95%), of the median (min to max) or the best
    (lowest) value itself; unbounded from fewer than two values, which say nothing of spread."""
    if statistic == "best":
        return min(values), min(values)
    if len(values) < 2:
        return -math.inf, math.inf
    if statistic == "median":
        return min(values), max(values)
    half = t_quantile(len(values)) * statistics.stdev(values) / math.sqrt(len(values))
    return statistics.fmean(values) - half, statistics.fmean(values) + half


def median_coverage(n: int) -> float:
    """The probability that the smallest and largest of n draws enclose the median: 1 − 2^(1−n)."""
    return 1 - 2.0 ** (1 - n)


def seeds_needed(std: float, margin: float, most: int = 1000) -> int | None:
    """The fewest seeds whose 95% t-interval, at spread `std`, is narrower on each side than
    `margin`; None if the margin is nil or no count up to `most` does it."""
    if margin <= 0:
        return None
    n = 2
    while t_quantile(n) * std / math.sqrt(n) >= margin:
        n += 1
        if n > most:
            return None
    return n
