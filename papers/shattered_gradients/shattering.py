"""How shattered a network's gradients are (Balduzzi et al. 2017, Sec. 2 and 4).

Over a grid of inputs x_1 … x_n on a line (a 1-D grid, or images along a segment), g_i is the
derivative of the output along the line at x_i. The paper's measures:

    neighbour correlation  ρ = Σ_i g_i g_{i+1} / sqrt(Σ_{i<n} g_i² · Σ_{i>1} g_i²)
    autocorrelation        A(k) = Σ_i g_i g_{i+k} / Σ_i g_i², k = 0 … K
    spectrum               P(f) = |DFT(g - mean g)|²,  fitted P ∝ f^s over f = 1 … n/2

ρ is 1 for a constant gradient (a linear net), near 1 for brown noise (a random walk: the
gradients of a shallow net), near 0 for white noise (shattered gradients); s is -2 for brown
noise and 0 for white. The decay of ρ with depth L is fitted as the paper states it: feedforward
ρ ∝ 2^(-r·L) (r = 1: 1/2^L), resnet ρ ∝ L^(-p) (p = 1/2: 1/√L).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


def grid_statistics(net: nn.Module, inputs: Tensor) -> nn.Module:
    """`net` in evaluation mode, its batch norms holding the statistics of `inputs` (the whole
    grid, one pass): each output then depends on its own input only, so its gradient is the
    derivative of one function, and batch norm normalises as it would over that batch."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: after one pass, that batch's statistics
    net.train()
    with torch.no_grad():
        net(inputs)
    return net.eval()


def line_gradients(net: nn.Module, start: Tensor, end: Tensor, n: int, output: int = 0) -> Tensor:
    """g_i = d/dt f(x(t))_output at t_i = i/(n-1), x(t) = (1-t)·start + t·end: the gradient of
    the output with respect to the input along the segment (batch norms: the segment's own
    statistics)."""
    t = torch.linspace(0, 1, n).reshape(-1, *([1] * start.dim()))
    points = (1 - t) * start + t * end
    grid_statistics(net, points)
    points.requires_grad_(True)
    net(points)[:, output].sum().backward()
    return (points.grad * (end - start)).flatten(1).sum(1).detach()


def neighbour_correlation(g: Tensor | np.ndarray) -> float:
    """ρ: how alike neighbouring gradients are, 1 for a constant, ~0 for white noise."""
    g = np.asarray(g, dtype=np.float64)
    a, b = g[:-1], g[1:]
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def autocorrelation(g: Tensor | np.ndarray, lags: int) -> np.ndarray:
    """A(k), k = 0 … lags (A(0) = 1)."""
    g = np.asarray(g, dtype=np.float64)
    return np.array([g[: len(g) - k] @ g[k:] for k in range(lags + 1)]) / (g @ g)


def spectral_slope(g: Tensor | np.ndarray) -> float:
    """s in P(f) ∝ f^s, least squares in log-log over f = 1 … n/2: -2 brown, 0 white noise."""
    g = np.asarray(g, dtype=np.float64)
    power = np.abs(np.fft.rfft(g - g.mean()))[1:] ** 2
    freq = np.arange(1, len(power) + 1)
    return float(np.polyfit(np.log(freq), np.log(power + 1e-300), 1)[0])


def halving_rate(depths: list[int], rho: list[float], floor: float) -> float:
    """r in ρ ∝ 2^(-r·L), fitted on the depths where ρ is above `floor` (the grid's noise
    level) from the shallowest on; 1 is the paper's 1/2^L. Needs two such depths."""
    kept = [(d, r) for d, r in zip(depths, rho, strict=True) if r > floor]
    if len(kept) < 2:
        raise ValueError(f"halving_rate: fewer than 2 depths with correlation above {floor:g}")
    d, r = np.array(kept).T
    return float(-np.polyfit(d, np.log2(r), 1)[0])


def power_exponent(depths: list[int], rho: list[float]) -> float:
    """p in ρ ∝ L^(-p), least squares in log-log over every depth; 1/2 is the paper's 1/√L."""
    r = np.clip(np.array(rho, dtype=np.float64), 1e-12, None)
    return float(-np.polyfit(np.log(depths), np.log(r), 1)[0])
