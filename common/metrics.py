"""Model statistics (parameters, multiply-adds) and aggregation of results over seeds."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of one forward pass, as the papers count FLOPs (one MAC = 2 flops).

    Counted by `torch.utils.flop_counter` on an input of `input_shape` (batch included) in eval
    mode, so stochastic layers take their deterministic test-time path.
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(*input_shape))
    model.train(was_training)
    return counter.get_total_flops() // 2


STATISTICS = {
    "best": min,  # lowest error of N runs
    "median": statistics.median,
    "mean": statistics.fmean,
}


def summarize(values: Sequence[float], statistic: str) -> dict[str, float | int]:
    """Mean ± std over seeds plus the statistic the paper reports (best/median/mean of N)."""
    if not values:
        raise ValueError("summarize: no values")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic: {statistic!r} is not one of {sorted(STATISTICS)}")
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        statistic: STATISTICS[statistic](values),
    }
