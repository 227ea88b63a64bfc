"""Beyond Finite Layer Neural Networks: Bridging Deep Architectures and Numerical Differential
Equations — Lu, Zhong, Li, Dong, ICML 2018 (arXiv 1710.10121): LM-ResNet.

A residual block is a forward-Euler step u_{n+1} = u_n + f_n(u_n) of u_t = f(u). The
LM-architecture makes it a two-step (linear multi-step) scheme, one trainable scalar k_n per block:

    u_{n+1} = (1 − k_n)·u_n + k_n·u_{n−1} + f_n(u_n)                      (the LM-architecture)

k_n = 0 is the ResNet block. f_n is the residual branch F of papers/resnet, in either order:
pre-activation (the paper's CIFAR block, "bn-relu-conv-bn-relu-conv" after He et al. 2016, the
default) or post-activation, where the block's ReLU follows the whole sum:
u_{n+1} = ReLU((1 − k_n)·u_n + k_n·u_{n−1} + F(u_n)). With stochastic depth (`survival_prob` = p_L
< 1) block n keeps its branch in a training mini-batch with probability p_n:

    train:  u_{n+1} = (1 − k_n)·u_n + k_n·u_{n−1} + b_n·f_n(u_n),   b_n ~ Bernoulli(p_n)
    test:   u_{n+1} = (1 − k_n)·u_n + k_n·u_{n−1} + p_n·f_n(u_n)
    p_n = 1 − (n/L)(1 − p_L),  n = 1 ... L over all blocks (papers/stochastic_depth's linear rule)

A dropped block does not compute f_n (a plain block gives h(u_n)).

CIFAR LM-ResNet-(6n+2) (basic blocks, option A) and LM-ResNet-(9n+2) (bottlenecks, projection on
a dimension increase, papers/preact_resnet's ResNet-164) have the matching ResNet's parameters
plus one k_n per LM block, 3(n − 1) of them. This file guarantees (3 input channels, 10 classes;
ResNet's counts: papers.resnet.model.CifarResNet, papers.preact_resnet.model.PreActResNet):

    network          k_n   params (ours)   ResNet's (ours)   paper's ResNet
    LM-ResNet-20       6      269,728         269,722        0.27M
    LM-ResNet-32      12      464,166         464,154        0.46M
    LM-ResNet-44      18      658,604         658,586        0.66M
    LM-ResNet-56      24      853,042         853,018        0.85M
    LM-ResNet-110     51    1,728,013       1,727,962        1.7M
    LM-ResNet-164     51    1,703,309       1,703,258        1.7M     (bottlenecks, pre order)

Basic blocks count the same in either order (papers/preact_resnet: its ResNet-110 full_preact =
original); the post-order LM-ResNet-164 has 1,704,205 (PreActResNet "original": 1,704,154).

The decisions, and where each comes from (official code: 2prime/LM-ResNet, MResNet.py). The
paper's own text was not at hand when this file was written: its equation and its CIFAR block are
as reimplementations quote it; its k_n initialisation, first blocks and the noise of its
stochastic LM-ResNet are unconfirmed, and follow the official code or stochastic depth below.
- Which term k_n multiplies. The paper: (1 − k_n) on u_n, k_n on u_{n−1}, as above. The official
  code computes `b(x) + k·x_n + (1 − k)·x_{n−1}`: its k is 1 − the paper's (and so is the
  project's notes' update x_{n+1} = f_n(x_n) + k_n·x_n + (1 − k_n)·x_{n−1}). We follow the paper:
  k_n = 0, not 1, is a ResNet block, and weight decay pulls k_n towards the ResNet.
- Initialisation: k_n ~ U(−0.1, 0), the code's U(1.0, 1.1) in the paper's parameterisation.
- A stage's first block is a plain residual block, u_{n+1} = h(u_n) + f_n(u_n), without k_n (the
  code's first block and every block whose width changes): the network's first block has no
  u_{n−1}, and at a transition (stride 2, new width) u_n and u_{n−1} differ in shape.
- The u_{n−1} of the block after a plain one is that block's shortcut h(u_n) (the code's
  `last_residual = residual`): u_n itself after the first block, its zero-padded (option A) or
  projected (B) subsample after a transition.
- Transitions: option A, as papers/resnet's CIFAR ResNets; the code projects with BN-ReLU-conv1x1
  (its own BN) for basic blocks too: `shortcut="B"` is the closest (a 1x1 conv on the block's
  activation). Bottlenecks: option B, as papers/preact_resnet's ResNet-164.
- Stochastic depth: Huang et al.'s rule on f_n (papers/stochastic_depth), not a noise scaling of
  the paper's own (which it derives from a stochastic dynamic system; unconfirmed). The code
  scales a kept branch by 1/p_n while training and runs it unscaled at test, with death rates
  (i/(L − 1))(1 − p_L), i = 0 ... L − 1 (the first block never dropped); its transitions drop
  too (then h(u_n) alone), as here.
- The code's `pretrain=True` default runs every block as a plain ResNet block until
  `change_state()` is called; here every LM block always uses its k_n.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from papers.preact_resnet.model import bottleneck_units_per_stage
from papers.resnet.model import (
    CIFAR_WIDTHS,
    ORDERS,
    BasicBlock,
    Bottleneck,
    ResidualBlock,
    ResNet,
    blocks_per_stage,
    build_stages,
    conv3x3,
    one_of,
    stage_specs,
)
from papers.stochastic_depth.model import survival_probs

K_INIT = (-0.1, 0.0)  # U(−0.1, 0): the code's U(1.0, 1.1) for 1 − k_n


class LMBlock(ResidualBlock):
    """A residual block of papers/resnet as one step of the LM-architecture. Mixed into
    BasicBlock or Bottleneck, whose convs, BNs and shortcut it keeps; `k` is None in a plain
    block (a stage's first), which the network sets, as it sets `survival_prob` (p_n)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.register_parameter("k", None)
        self.survival_prob = 1.0

    def preactivation(self, x: Tensor) -> Tensor:
        """ReLU(BN(x)) in the pre order (unless the stem already activated x), else x."""
        return x if self.order == "post" or self.bn1 is None else F.relu(self.bn1(x))

    def keeps_branch(self) -> bool:
        """b_n ~ Bernoulli(p_n) while training, from torch's global CPU RNG (seeded runs repeat);
        always at test, and without a draw when p_n = 1."""
        p = self.survival_prob
        return not self.training or p == 1 or torch.rand(1).item() < p

    def forward(self, x: Tensor, x_prev: Tensor) -> tuple[Tensor, Tensor]:
        """(u_{n+1}, u_n as the next block's u_{n−1}) from u_n = x and u_{n−1} = x_prev."""
        keep, identity = self.keeps_branch(), isinstance(self.shortcut, nn.Identity)
        # A shape-changing shortcut takes the activated input (papers/resnet's pre order).
        activated = self.preactivation(x) if keep or not identity else x
        h = x if identity else self.shortcut(activated)
        out = h if self.k is None else (1 - self.k) * x + self.k * x_prev
        if keep:
            f = self.residual(activated)
            p = self.survival_prob
            out = out + (f if self.training or p == 1 else p * f)  # test: E[b_n] f_n = p_n f_n
        return (F.relu(out) if self.order == "post" else out), h

    def extra_repr(self) -> str:
        return f"lm={self.k is not None}, survival_prob={self.survival_prob:.4f}"


class LMBasicBlock(LMBlock, BasicBlock):
    """Two 3x3 convs (LM-ResNet-20 ... 110)."""


class LMBottleneck(LMBlock, Bottleneck):
    """1x1 reduce → 3x3 → 1x1 expand to 4·width, stride in the first 1x1 (LM-ResNet-164)."""


class LMResNet(ResNet):
    """CIFAR LM-ResNet: papers/resnet's CIFAR ResNet with LM blocks (module docstring).

    Args:
        depth: 6n+2 with basic blocks (20, 32, 44, 56, 110), 9n+2 with bottlenecks (164).
        order: "pre" (pre-activation, the paper's) or "post" (He et al. 2015's blocks).
        bottleneck: bottleneck blocks (LM-ResNet-164) instead of basic ones.
        shortcut: the transitions' shortcut option of papers/resnet ("A", "B", "C"); None: A for
            basic blocks, B for bottlenecks, as the ResNets they are compared with.
        survival_prob: p_L of stochastic depth's linear rule in (0, 1]; 1: no stochastic depth.
        in_channels: 3 for CIFAR, 1 for (Fashion-)MNIST.
        num_classes: outputs of the final FC.
    """

    def __init__(
        self,
        depth: int,
        order: str = "pre",
        bottleneck: bool = False,
        shortcut: str | None = None,
        survival_prob: float = 1.0,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        one_of("order", order, ORDERS)
        if not 0 < survival_prob <= 1:
            raise ValueError(f"survival_prob: {survival_prob} is outside (0, 1]")
        n = bottleneck_units_per_stage(depth) if bottleneck else blocks_per_stage(depth)
        block = LMBottleneck if bottleneck else LMBasicBlock
        option = shortcut or ("B" if bottleneck else "A")
        specs = stage_specs(CIFAR_WIDTHS[0], CIFAR_WIDTHS, [n] * 3, block.expansion)
        stages = build_stages(specs, block, option, order=order)
        super().__init__(conv3x3(in_channels, CIFAR_WIDTHS[0]), stages, num_classes, order=order)
        for stage in stages:
            for lm_block in stage[1:]:  # a stage's first block stays plain
                lm_block.k = nn.Parameter(torch.empty(()).uniform_(*K_INIT))
        for lm_block, p_n in zip(self.blocks, survival_probs(3 * n, survival_prob), strict=True):
            lm_block.survival_prob = p_n

    @property
    def k(self) -> dict[str, nn.Parameter]:
        """Every k_n, named by its stage and block (1-based): k_stage1_block2, ..."""
        return {
            f"k_stage{s}_block{b}": block.k
            for s, stage in enumerate(self.stages, start=1)
            for b, block in enumerate(stage, start=1)
            if block.k is not None
        }

    @property
    def survival_probs(self) -> list[float]:
        """p_n of every block, n = 1 ... L."""
        return [block.survival_prob for block in self.blocks]

    def metrics(self) -> dict[str, float]:
        """The current k_n, logged per epoch as train_k_stage<s>_block<b> (the mean over the
        epoch's steps); none in eval mode, where every split would repeat the same weights."""
        if not self.training:
            return {}
        k = self.k
        values = torch.stack([v.detach() for v in k.values()]).tolist() if k else []
        return dict(zip(k, values, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x_prev = x  # unread: the first block is plain
        for block in self.blocks:
            x, x_prev = block(x, x_prev)
        if self.final_bn is not None:
            x = F.relu(self.final_bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
