"""papers/numerical_stacking: its sweep's settings and metrics, for `common.check` (the pipeline's
first stage).

`METRICS`: the scalars `sweep.py analyze` writes (per run: diverged; per kind and seed, on its
reference arm: placement_swing, top_lr_train_error), which published.yaml cites; `check(params)`:
the divergence rule of the active profile and a complete grid (every kind at both placements and
every rate).
"""

from __future__ import annotations

from typing import Any

from papers.numerical_stacking.sweep import check_grid, diverged_train_error

METRICS = ("diverged", "placement_swing", "top_lr_train_error")


def check(params: dict[str, Any]) -> None:
    """ConfigError naming the field: no divergence rule, or an incomplete grid of arms."""
    diverged_train_error(params)
    check_grid(params)
