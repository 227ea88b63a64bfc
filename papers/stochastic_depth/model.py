"""Deep Networks with Stochastic Depth — Huang, Sun, Liu, Sedra, Weinberger 2016 (arXiv 1603.09382).

Residual block l of L survives a training mini-batch with probability p_l:

    train:  H_l = ReLU(b_l · f_l(H_{l-1}) + id(H_{l-1})),   b_l ~ Bernoulli(p_l)
            b_l = 0 leaves H_l = id(H_{l-1}), and f_l is not computed at all
    test:   H_l = ReLU(p_l · f_l(H_{l-1}) + id(H_{l-1}))
    linear decay:  p_l = 1 − (l/L)(1 − p_L)          uniform:  p_l = p_L
    expected depth: E[L~] = Σ_l p_l = L − (1 − p_L)(L + 1)/2  =  (3L − 1)/4 at p_L = 0.5

The network is the post-activation CIFAR ResNet-(6n+2) of He et al. (papers/resnet/model.py),
L = 3n blocks, with the paper's transition shortcut: 2x2/2 average pooling, then zero-padding of
the new channels. This file guarantees (3 input channels, 10 classes, linear rule, p_L = 0.5):

    depth   L     params        E[L~]     used for
    110     54     1,727,962     40.25    CIFAR-10+/100+ (Table 1)
    152     75     2,408,474     56.00    SVHN
    1202    600   19,421,274    449.75    CIFAR-10+ (Table 1, ResNet-1202)

p_L = 1 is the constant-depth baseline: the same network as a ResNet with this shortcut.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from papers.resnet.model import (
    CIFAR_WIDTHS,
    BasicBlock,
    ResNet,
    build_stages,
    cifar_stage_specs,
    conv3x3,
)

RULES = ("linear", "uniform")


def survival_probs(
    num_blocks: int, survival_prob_last: float = 0.5, rule: str = "linear"
) -> list[float]:
    """p_1 ... p_L under the linear decay rule p_l = 1 − (l/L)(1 − p_L), or uniform p_l = p_L."""
    if not 0 < survival_prob_last <= 1:
        raise ValueError(f"survival_prob_last: {survival_prob_last} is outside (0, 1]")
    if rule not in RULES:
        raise ValueError(f"rule: {rule!r} is not one of {list(RULES)}")
    if rule == "uniform":
        return [survival_prob_last] * num_blocks
    return [1 - i / num_blocks * (1 - survival_prob_last) for i in range(1, num_blocks + 1)]


class StochasticDepthBlock(BasicBlock):
    """A post-activation basic block whose branch f_l survives a training mini-batch with
    `survival_prob` (set per block by the network; 1 keeps it always)."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        shortcut: nn.Module,
        survival_prob: float = 1.0,
    ) -> None:
        super().__init__(in_channels, width, stride, shortcut)
        self.survival_prob = survival_prob

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return F.relu(self.survival_prob * self.residual(x) + self.shortcut(x))
        # b_l ~ Bernoulli(p_l) from torch's global CPU RNG: seeded runs repeat, no GPU sync.
        if torch.rand(1).item() < self.survival_prob:
            return super().forward(x)
        # ReLU(id(H_{l-1})) = id(H_{l-1}): H_{l-1} is a ReLU output and id keeps it non-negative.
        return self.shortcut(x)

    def extra_repr(self) -> str:
        return f"survival_prob={self.survival_prob:.4f}"


class StochasticDepthResNet(ResNet):
    """CIFAR ResNet-(6n+2) trained with stochastic depth (Sec. 3-4; ResNet-110, L = 54, p_L = 0.5).

    Training notes: a dropped block's parameters get no gradient in that step, so
    - DDP needs find_unused_parameters=True (Lightning: strategy="ddp_find_unused_parameters_true");
      every rank seeded alike (seed_everything) draws the same blocks;
    - `callbacks.DecayDroppedBlocks` keeps SGD's weight decay and momentum acting on dropped
      blocks, as in the official Torch code; with None gradients torch's SGD skips those parameters.

    Args:
        depth: 6n+2 weighted layers; L = 3n residual blocks.
        survival_prob_last: p_L in (0, 1]; 1 turns stochastic depth off.
        rule: "linear" decay from p_0 = 1 to p_L, or "uniform" p_l = p_L.
        in_channels: 3 for CIFAR/SVHN, 1 for 28x28 (Fashion-)MNIST.
        num_classes: outputs of the final FC.
    """

    def __init__(
        self,
        depth: int,
        survival_prob_last: float = 0.5,
        rule: str = "linear",
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        specs = cifar_stage_specs(depth)
        probs = survival_probs(sum(map(len, specs)), survival_prob_last, rule)
        # The transition's id: option A's zero padding, subsampled by 2x2 average pooling.
        stages = build_stages(specs, StochasticDepthBlock, "A", subsample="avg_pool")
        super().__init__(conv3x3(in_channels, CIFAR_WIDTHS[0]), stages, num_classes)
        for block, p_l in zip(self.blocks, probs, strict=True):
            block.survival_prob = p_l

    @property
    def survival_probs(self) -> list[float]:
        """p_l of every block, l = 1 ... L."""
        return [block.survival_prob for block in self.blocks]

    @property
    def expected_depth(self) -> float:
        """E[L~] = Σ_l p_l, the expected number of blocks active in a training mini-batch."""
        return sum(self.survival_probs)
