"""papers/stochastic_depth/model.py against Huang et al. 2016 (Sec. 3-4)."""

from __future__ import annotations

import itertools
import re
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from common.metrics import count_macs, count_params
from papers.resnet.model import (
    BasicBlock,
    ResNet,
    ZeroPadShortcut,
    cifar_stage_specs,
    conv3x3,
    make_shortcut,
)
from papers.stochastic_depth.model import (
    StochasticDepthBlock,
    StochasticDepthResNet,
    survival_probs,
)
from tests.conftest import assert_trains_on_fashion_mnist_and_pickles


def manual_branch(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    """f_l(x) = BN(conv(ReLU(BN(conv(x))))), written out independently of the model."""
    return block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))


def manual_transition(x: torch.Tensor, extra_channels: int) -> torch.Tensor:
    """id(x) of a transition: 2x2/2 average pooling, then zero channels appended."""
    return F.pad(F.avg_pool2d(x, 2), (0, 0, 0, 0, 0, extra_channels))


def count_branch_calls(model: nn.Module) -> list[int]:
    """Forward hooks counting how often each block's first branch conv runs."""
    calls = [0] * len(model.blocks)

    def hook(index: int):
        def count(*_: object) -> None:
            calls[index] += 1

        return count

    for index, block in enumerate(model.blocks):
        block.conv1.register_forward_hook(hook(index))
    return calls


def kept_blocks(depth: int, seed: int) -> list[int]:
    """1 for each block of a fresh network that ran its branch in a training pass under `seed`."""
    model = StochasticDepthResNet(depth)
    calls = count_branch_calls(model)
    torch.manual_seed(seed)
    model.train()(torch.randn(2, 3, 32, 32))
    return calls


def test_linear_survival_probs() -> None:
    probs = StochasticDepthResNet(110).survival_probs
    assert len(probs) == 54
    assert probs[0] == pytest.approx(1 - (1 / 54) * 0.5, abs=1e-12)
    assert probs[-1] == pytest.approx(0.5, abs=1e-12)
    assert all(a > b for a, b in itertools.pairwise(probs))
    assert probs == survival_probs(54, 0.5, "linear")


def test_uniform_survival_probs() -> None:
    model = StochasticDepthResNet(110, survival_prob_last=0.8, rule="uniform")
    assert model.survival_probs == [0.8] * 54
    assert model.expected_depth == pytest.approx(0.8 * 54)


def test_expected_depth_is_3l_minus_1_over_4() -> None:
    # Exact arithmetic: Σ_{l=1}^{L} (1 − (l/L)·½) = (3L − 1)/4 = 40.25 for L = 54.
    exact = sum(1 - Fraction(layer, 54) * Fraction(1, 2) for layer in range(1, 55))
    assert exact == Fraction(3 * 54 - 1, 4) == Fraction(161, 4)
    assert StochasticDepthResNet(110).expected_depth == pytest.approx(40.25, abs=1e-12)


@pytest.mark.parametrize("survival_prob_last", [0, -0.5, 1.5])
def test_bad_survival_prob_last(survival_prob_last: float) -> None:
    message = f"survival_prob_last: {survival_prob_last} is outside (0, 1]"
    with pytest.raises(ValueError, match=re.escape(message)):
        StochasticDepthResNet(20, survival_prob_last=survival_prob_last)


def test_bad_rule_and_depth() -> None:
    with pytest.raises(ValueError, match=r"rule: 'cosine' is not one of \['linear', 'uniform'\]"):
        StochasticDepthResNet(20, rule="cosine")
    with pytest.raises(ValueError, match="depth: 21 is not of the form 6n"):
        StochasticDepthResNet(21)


@pytest.mark.parametrize(
    ("depth", "params", "expected_depth"),
    [(110, 1_727_962, 40.25), (152, 2_408_474, 56.0), (1202, 19_421_274, 449.75)],
)
def test_params_and_expected_depth_as_documented(
    depth: int, params: int, expected_depth: float
) -> None:
    with torch.device("meta"):  # counts depend on shapes only
        model = StochasticDepthResNet(depth)
    assert count_params(model) == params  # ResNet-110 option A's count: the shortcuts add none
    assert model.expected_depth == pytest.approx(expected_depth, abs=1e-9)


@pytest.mark.parametrize(("in_channels", "stride"), [(16, 1), (16, 2)])
def test_dropped_block_skips_its_branch(in_channels: int, stride: int) -> None:
    torch.manual_seed(0)
    width = in_channels * stride
    shortcut = make_shortcut("A", in_channels, width, stride, subsample="avg_pool")
    block = StochasticDepthBlock(in_channels, width, stride, shortcut, survival_prob=0.5).train()
    calls: list[str] = []
    block.conv1.register_forward_hook(lambda *_: calls.append("conv1"))
    block.conv2.register_forward_hook(lambda *_: calls.append("conv2"))
    x = F.relu(torch.randn(4, in_channels, 8, 8))  # block inputs are ReLU outputs
    identity = x if stride == 1 else manual_transition(x, width - in_channels)
    outcomes = set()
    for seed in range(16):
        before = len(calls)
        torch.manual_seed(seed)
        y = block(x)
        ran = len(calls) > before
        if torch.equal(y, identity):  # dropped: H_l = id(H_{l-1}), f_l never evaluated
            assert not ran
        else:
            assert ran
            torch.testing.assert_close(y, F.relu(manual_branch(block, x) + identity))
        outcomes.add(ran)
    assert outcomes == {True, False}


def branch_flops(block: BasicBlock, size: int, batch: int) -> int:
    """f_l's two 3x3 convs at the block's output resolution: c_in→c_out, then c_out→c_out."""
    c_in, c_out = block.conv1.in_channels, block.out_channels
    return 2 * batch * size**2 * 9 * c_out * (c_in + c_out)  # 2 flops per multiply-add


def test_dropping_saves_the_dropped_branches_flops() -> None:
    batch = 2
    model = StochasticDepthResNet(20)
    sizes = [32 // 2**s for s, stage in enumerate(model.stages) for _ in stage]
    branch = [branch_flops(b, size, batch) for b, size in zip(model.blocks, sizes, strict=True)]
    full = 2 * count_macs(model, (batch, 3, 32, 32))  # eval: every branch runs
    calls = count_branch_calls(model)
    dropped_blocks = 0
    for seed in range(4):
        before = list(calls)
        counter = FlopCounterMode(display=False)
        torch.manual_seed(seed)
        with counter:
            model.train()(torch.randn(batch, 3, 32, 32))
        ran = [now > then for now, then in zip(calls, before, strict=True)]
        saved = sum(flops for flops, kept in zip(branch, ran, strict=True) if not kept)
        assert counter.get_total_flops() == full - saved
        dropped_blocks += ran.count(False)
    assert dropped_blocks > 0


@pytest.mark.parametrize("index", [0, 3])  # an identity block and the first transition
def test_eval_scales_branch_by_survival_prob(index: int) -> None:
    torch.manual_seed(0)
    model = StochasticDepthResNet(20).eval()
    block = model.blocks[index]
    x = F.relu(torch.randn(2, block.conv1.in_channels, 16, 16))
    extra = block.out_channels - block.conv1.in_channels
    identity = x if index == 0 else manual_transition(x, extra)
    with torch.no_grad():
        expected = F.relu(block.survival_prob * manual_branch(block, x) + identity)
        torch.testing.assert_close(block(x), expected)
        assert block.survival_prob < 1
        assert not torch.allclose(block(x), F.relu(manual_branch(block, x) + identity))


def test_survival_prob_one_is_a_resnet_with_the_same_shortcut() -> None:
    torch.manual_seed(0)
    stochastic = StochasticDepthResNet(20, survival_prob_last=1.0)

    def transition(c_in: int, c_out: int, stride: int) -> nn.Module:
        return ZeroPadShortcut(c_in, c_out, stride, subsample="avg_pool")

    stages = [
        [
            BasicBlock(c_in, width, stride, transition(c_in, c_out, stride))
            if stride != 1
            else BasicBlock(c_in, width, stride, nn.Identity())
            for c_in, width, stride, c_out in stage
        ]
        for stage in cifar_stage_specs(20)
    ]
    resnet = ResNet(conv3x3(3, 16), stages, num_classes=10)
    resnet.load_state_dict(stochastic.state_dict(), strict=True)
    x = torch.randn(4, 3, 32, 32)
    for train in (True, False):
        torch.testing.assert_close(stochastic.train(train)(x), resnet.train(train)(x))


def test_transitions_average_pool_and_zero_pad() -> None:
    shortcuts = [block.shortcut for block in StochasticDepthResNet(20).blocks]
    transitions = [s for s in shortcuts if not isinstance(s, nn.Identity)]
    assert [shortcuts.index(s) for s in transitions] == [3, 6]
    assert all(isinstance(s, ZeroPadShortcut) and s.subsample == "avg_pool" for s in transitions)


def test_same_seed_same_dropped_blocks() -> None:
    first = kept_blocks(56, seed=1)
    assert kept_blocks(56, seed=1) == first
    assert any(kept_blocks(56, seed) != first for seed in range(2, 6))
    assert 0 < sum(first) < len(first)


def test_forward_on_fashion_mnist_and_picklable() -> None:
    assert_trains_on_fashion_mnist_and_pickles(StochasticDepthResNet(20, in_channels=1))
