"""papers/shattered_gradients: its measurements' settings and metrics, for `common.check` (the
pipeline's first stage).

`METRICS`: the scalars `measure.py` writes per (arm, data set, seed), which published.yaml cites
(ll_corr_deep and ll_gain: plain arms only); `check(params)`: the active profile's `analysis`
settings.
"""

from __future__ import annotations

from typing import Any

from common.config import ConfigError
from papers.shattered_gradients.measure import settings

METRICS = (
    "corr_deep", "corr_deep_bn", "bn_gain", "halving_rate", "halving_rate_bn", "power_exponent",
    "power_exponent_bn", "spectral_slope", "spectral_slope_bn", "line_corr",
    "line_spectral_slope", "ll_corr_deep", "ll_gain",
)  # fmt: skip


def check(params: dict[str, Any]) -> None:
    """ConfigError naming the field: a bad `analysis` setting of the active profile."""
    profile = params.get("profile", "default")
    if profile not in (params.get("analysis") or {}):
        raise ConfigError(f"analysis.{profile}: missing (the measurements' settings per profile)")
    settings(params, profile)
