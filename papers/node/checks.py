"""Node's own settings and metrics, for `common.check` (the pipeline's first stage)."""

from __future__ import annotations

from typing import Any

from papers.node.analysis import fig3_settings, memory_settings

# The analyses' scalars a published row may cite (analysis.py writes them per arm and seed).
METRICS = (
    "memory_mib_per_l", "memory_ratio", "nfe_backward_over_forward", "seconds_per_nfe",
    "nfe_growth",
)  # fmt: skip


def check(params: dict[str, Any]) -> None:
    """The memory and Fig. 3 settings of the active profile (a ConfigError names the field)."""
    memory_settings(params)
    fig3_settings(params)
