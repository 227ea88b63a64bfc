"""The lesion study's own settings and metrics, for `common.check` (the pipeline's first stage)."""

from __future__ import annotations

import itertools
from typing import Any

from common.config import build_model, resolve
from common.datasets import DATASETS
from papers.resnets_as_ensembles.analyze import analysis_config, check_ks

# The analyses' scalars a published row may cite (lesion.py computes them, analyze.py writes them).
METRICS = (
    "base_error", "chance_error", "max_error_change", "mean_error_change", "min_error",
    "min_error_vs_chance", "max_error_change_downsampling", "sweep_base_error", "error_k10",
    "error_k10_vs_chance", "error_growth", "effective_low_fraction", "effective_high_fraction",
)  # fmt: skip


def check(params: dict[str, Any]) -> None:
    """The active profile's analysis settings, and its sweeps against every trained network."""
    profile = params.get("profile", "default")
    config = analysis_config(params, profile)
    for arm, dataset in itertools.product(params["arms"], params["datasets"]):
        run = resolve(params, paper="resnets_as_ensembles", arm=arm, dataset=dataset, seed=0)
        info = DATASETS[dataset]
        model = build_model(run.model, info.shape[0], info.num_classes)
        check_ks(model, config, f"analyses.{profile}.{{}} (arm {arm})")
