"""Residual Networks Behave Like Ensembles of Relatively Shallow Networks — Veit, Wilber, Belongie
2016 (arXiv 1605.06431): the network of its training experiment (Sec. 5).

Almost all gradient reaches a trained ResNet-110 through paths 5–17 blocks long, so the paper
trains with short paths only: each mini-batch runs a random subset of k of the n blocks, every
other block passing its input through its shortcut alone (y_i = shortcut(y_{i-1})), which bounds
the path length by k. With k = 23 of n = 54 it reports 5.96% CIFAR-10 error, against 6.10% for
the network trained whole. At test time every block runs; the paper does not say how the branches
are scaled, so each residual branch is weighted by its training-time probability k/n, as
stochastic depth does (Huang et al. 2016): y_i = ReLU((k/n) · f_i(y_{i-1}) + shortcut(y_{i-1})).
The lesion study itself runs on `papers.resnet.model.CifarResNet` networks (see lesion.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from papers.resnet.model import (
    CIFAR_WIDTHS,
    BasicBlock,
    ResNet,
    build_stages,
    cifar_stage_specs,
    conv3x3,
    one_of,
)


class SampledBlock(BasicBlock):
    """A post-activation basic block that a mini-batch either runs (`active`) or skips."""

    active: bool = True
    weight: float = 1.0  # k/n: the residual branch's weight at test time

    def residual(self, x: Tensor) -> Tensor:
        f = super().residual(x)
        return f if self.training else self.weight * f

    def forward(self, x: Tensor) -> Tensor:
        if self.training and not self.active:
            # ReLU(shortcut(y)) = shortcut(y): y is a ReLU output and option A keeps it ≥ 0.
            return self.shortcut(x)
        return super().forward(x)


class SampledBlocksResNet(ResNet):
    """CIFAR ResNet-(6n+2) trained on `active_blocks` random blocks per mini-batch (Sec. 5).

    Args:
        depth: 6n+2 weighted layers; 3n residual blocks (110: 54 blocks).
        active_blocks: k blocks run per training mini-batch (the paper: 23).
        shortcut: "A" only (the zero-padding identity: a skipped block stays non-negative).
        in_channels: 3 for CIFAR, 1 for (Fashion-)MNIST.
        num_classes: outputs of the final FC.
    """

    def __init__(
        self,
        depth: int,
        active_blocks: int = 23,
        shortcut: str = "A",
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        one_of("shortcut", shortcut, ["A"])
        specs = cifar_stage_specs(depth)
        n = sum(map(len, specs))
        if not 1 <= active_blocks <= n:
            raise ValueError(f"active_blocks: {active_blocks} is not in 1..{n}")
        stages = build_stages(specs, SampledBlock, "A")
        super().__init__(conv3x3(in_channels, CIFAR_WIDTHS[0]), stages, num_classes)
        self.active_blocks = active_blocks
        for block in self.blocks:
            block.weight = active_blocks / n

    def forward(self, x: Tensor) -> Tensor:
        if self.training:  # a fresh subset per mini-batch, from torch's seeded global RNG
            chosen = set(torch.randperm(len(self.blocks))[: self.active_blocks].tolist())
            for i, block in enumerate(self.blocks):
                block.active = i in chosen
        return super().forward(x)
