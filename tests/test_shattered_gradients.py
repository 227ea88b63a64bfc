"""papers/shattered_gradients: the measures of shattering (shattering.py) on nets whose gradients
are known, the fitted laws on exact curves, Fig. 1's nets at initialisation, and its settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from common.config import ConfigError
from papers.shattered_gradients import shattering
from papers.shattered_gradients.measure import PLAIN, RESIDUAL, Settings, settings, sweep
from papers.shattered_gradients.model import ShatteringNet

ENDS = torch.tensor([-2.0]), torch.tensor([2.0])


def test_a_depth_one_linear_net_has_a_constant_gradient() -> None:
    torch.manual_seed(0)
    net = nn.Linear(1, 1)
    g = shattering.line_gradients(net, *ENDS, 256)
    assert torch.allclose(g, torch.full_like(g, 4 * net.weight.item()))  # f' times the span
    assert shattering.neighbour_correlation(g) == pytest.approx(1.0)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_a_resnet_with_zero_branches_has_the_identitys_gradient(batch_norm: bool) -> None:
    """h_L = h_0 when every branch W_l is zero: f(x) = w·(W_0 x + b_0) + c, f' = w·W_0."""
    torch.manual_seed(0)
    net = ShatteringNet(6, kind="resnet", width=32, batch_norm=batch_norm)
    for layer in net.layers:
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    g = shattering.line_gradients(net, *ENDS, 64)
    identity = 4 * (net.out.weight @ net.inp.weight).item()
    assert torch.allclose(g, torch.full_like(g, identity), rtol=1e-5)


def test_a_fresh_resnet_is_not_the_identity() -> None:
    """The test above can fail: with its branches, a resnet's gradient varies over the grid."""
    torch.manual_seed(0)
    g = shattering.line_gradients(ShatteringNet(6, kind="resnet", width=32), *ENDS, 64)
    assert g.std() > 1e-3 * g.abs().mean()


def test_plain_nets_decorrelate_faster_than_resnets_on_a_fixed_seed() -> None:
    s = Settings(grid=128, width=64, depths=(1, 4, 8, 16), floor=0.0, lags=4)
    for plain, residual in zip(PLAIN.values(), RESIDUAL.values(), strict=True):
        ff, res = sweep(plain, s, seed=0)["rho"], sweep(residual, s, seed=0)["rho"]
        assert ff[0] > 0.9 and res[0] > 0.9  # one layer: brown noise, not white
        assert ff[0] - ff[-1] > res[0] - res[-1]
        assert ff[-1] < res[-1]


def test_looks_linear_init_is_linear() -> None:
    torch.manual_seed(0)
    net = ShatteringNet(12, width=32, looks_linear=True)
    x = torch.linspace(-2, 2, 64).reshape(-1, 1)
    y = net(x).detach().flatten()
    assert torch.allclose(y[1:] - y[:-1], (y[1] - y[0]).expand(63), atol=1e-5)
    assert shattering.neighbour_correlation(shattering.line_gradients(net, *ENDS, 64)) == (
        pytest.approx(1.0)
    )


def test_the_fitted_laws_recover_their_exponents() -> None:
    depths = [1, 2, 4, 8, 16, 32]
    assert shattering.halving_rate(depths, [2.0**-d for d in depths], 1e-12) == pytest.approx(1)
    power = [d**-0.5 for d in depths]
    assert shattering.power_exponent(depths, power) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="fewer than 2 depths"):
        shattering.halving_rate(depths, [0.9, 0.1, 0.01, 0, 0, 0], 0.125)


def test_white_noise_is_flat_and_uncorrelated_brown_noise_is_not() -> None:
    white = np.random.default_rng(0).standard_normal(4096)
    brown = np.cumsum(white)
    assert abs(shattering.neighbour_correlation(white)) < 0.05
    assert shattering.neighbour_correlation(brown) > 0.95
    assert shattering.spectral_slope(white) == pytest.approx(0, abs=0.2)
    assert shattering.spectral_slope(brown) == pytest.approx(-2, abs=0.3)
    assert shattering.autocorrelation(white, 3)[0] == pytest.approx(1)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"widht": 200}, "analysis.default.widht: unknown field"),
        ({"depths": [4, 2]}, "analysis.depths: [4, 2] must increase strictly"),
        ({"grid": 1}, "analysis.grid: 1 must be an integer >= 2"),
    ],
)
def test_bad_settings_name_the_field(block: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings({"analysis": {"default": block}}, "default")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 0}, "depth: 0 must be >= 1"),
        ({"depth": 2, "kind": "highway"}, "kind: 'highway' is not one of"),
        ({"depth": 2, "kind": "resnet", "looks_linear": True}, "looks_linear: only for"),
    ],
)
def test_bad_network_arguments_name_them(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShatteringNet(**kwargs)
