"""papers/numerical_stacking/model.py: each stacking's block is one step of its integrator on a
linear f, RK4's local error against the matrix exponential shrinks as h⁵, the equal-parameter and
equal-multiply-add arms count equal, the downsampling block, per-stage BN statistics, bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.metrics import count_macs, count_params
from papers.numerical_stacking.model import (
    PLACEMENTS,
    STACKINGS,
    Block,
    StackingNet,
    subsample,
)
from tests.conftest import assert_trains_on_fashion_mnist_and_pickles

ORDER = {"euler": 1, "rk2": 2, "rk4": 4}  # an order-p Runge–Kutta step on x' = Ax is T_p(A)x


class LinearF(nn.Module):
    """f(x) = Ax per pixel (a 1x1 convolution by A), with the block function's signature."""

    def __init__(self, a: Tensor) -> None:
        super().__init__()
        self.a = a

    def forward(self, x: Tensor, stage: int = 0, stride: int = 1) -> Tensor:
        return F.conv2d(x, self.a[:, :, None, None], stride=stride)


def linear_block(stacking: str, a: Tensor, stride: int = 1) -> Block:
    block = Block(a.shape[0], stacking, stride)
    block.stages.f = LinearF(a)
    return block


def apply(matrix: Tensor, x: Tensor) -> Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix, x)


def taylor(a: Tensor, order: int) -> Tensor:
    """I + A + A²/2! + … + A^p/p!."""
    term, total = torch.eye(len(a), dtype=a.dtype), torch.eye(len(a), dtype=a.dtype)
    for j in range(1, order + 1):
        term = term @ a / j
        total = total + term
    return total


@pytest.fixture
def a() -> Tensor:
    return torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) / 2


@pytest.mark.parametrize("stacking", list(ORDER))
def test_block_is_one_integrator_step_on_a_linear_f(stacking: str, a: Tensor) -> None:
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    expected = apply(taylor(a, ORDER[stacking]), x)
    torch.testing.assert_close(linear_block(stacking, a)(x), expected)


def test_rk4_is_kuttas_three_eighths_rule(a: Tensor) -> None:
    """The stages of the 3/8 rule written out (one tableau among the fourth-order ones)."""
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    f = lambda y: apply(a, y)  # noqa: E731
    k1 = f(x)
    k2 = f(x + k1 / 3)
    k3 = f(x - k1 / 3 + k2)
    k4 = f(x + k1 - k2 + k3)
    torch.testing.assert_close(linear_block("rk4", a)(x), x + (k1 + 3 * k2 + 3 * k3 + k4) / 8)


def test_rk4_local_error_shrinks_as_h_to_the_fifth(a: Tensor) -> None:
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    errors = []
    for h in (0.2, 0.1, 0.05):
        step = linear_block("rk4", h * a)(x)
        errors.append((step - apply(torch.linalg.matrix_exp(h * a), x)).abs().max().item())
    orders = [math.log2(e1 / e2) for e1, e2 in itertools.pairwise(errors)]
    assert all(4.7 < p < 5.3 for p in orders), orders


def test_lm_block_is_the_two_step_rule(a: Tensor) -> None:
    x, x_prev = torch.randn(2, 1, 4, 3, 3, dtype=torch.float64)
    block = linear_block("lm", a)
    block.k = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
    torch.testing.assert_close(block.lm(x, x_prev), 0.7 * x + 0.3 * x_prev + apply(a, x))


@pytest.mark.parametrize("stacking", list(ORDER))
def test_downsampling_block_reads_full_resolution_first(stacking: str, a: Tensor) -> None:
    """k_1 = f(x) at stride 2, then the step from the subsampled state: for Euler the CIFAR
    ResNet's block, subsample(x) + f(x) at stride 2."""
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    out = linear_block(stacking, a, stride=2)(x)
    assert out.shape == (2, 4, 3, 3)
    if stacking == "euler":  # a 1x1 f commutes with subsampling: k_1 = A·subsample(x)
        torch.testing.assert_close(out, subsample(x) + apply(a, subsample(x)))
    torch.testing.assert_close(out, apply(taylor(a, ORDER[stacking]), subsample(x)))


def _net(stacking: str, placement: str, blocks: int = 3) -> StackingNet:
    return StackingNet(stacking=stacking, placement=placement, blocks=blocks, channels=8,
                       in_channels=1)  # fmt: skip


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_equal_parameters_at_equal_blocks(placement: str) -> None:
    counts = {s: count_params(_net(s, placement)) for s in STACKINGS}
    assert counts["euler"] == counts["rk2"] == counts["rk4"]
    assert counts["lm"] == counts["euler"] + 2  # one k_n per block after the first


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize(("stacking", "evaluations"), [("rk2", 2), ("rk4", 4), ("lm", 1)])
def test_equal_multiply_adds_against_euler_with_more_blocks(
    placement: str, stacking: str, evaluations: int
) -> None:
    shape = (1, 1, 28, 28)
    macs = count_macs(_net(stacking, placement), shape)
    euler = count_macs(_net("euler", placement, blocks=3 * evaluations), shape)
    assert macs == euler
    assert macs > count_macs(_net("euler", placement), shape) or stacking == "lm"


def test_each_stage_keeps_its_own_batch_norm_statistics() -> None:
    block = Block(4, "rk4").train()
    block(torch.randn(8, 4, 5, 5) * 3)
    means = [n.running_mean for n in block.f.norm1.norms]
    assert len(means) == 4 and all(m.abs().sum() > 0 for m in means)  # each stage updated its own
    assert not torch.allclose(means[0], means[3])


@pytest.mark.parametrize("stacking", STACKINGS)
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_trains_and_pickles(stacking: str, placement: str) -> None:
    assert_trains_on_fashion_mnist_and_pickles(_net(stacking, placement))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"stacking": "rk3"}, "stacking"), ({"placement": "head"}, "placement"),
     ({"blocks": 0}, "blocks"), ({"channels": 0}, "channels")],
)  # fmt: skip
def test_bad_arguments_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        StackingNet(**kwargs)
