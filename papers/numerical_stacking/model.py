"""Residual stacking as numerical integration — a study, not one paper (issue 27; the notes' own
robustness study, RK-style blocks after RKCNN, arXiv 1802.08831; LM after papers/lm_resnet).

A residual block x_{n+1} = x_n + h·f_n(x_n) is one forward-Euler step of x' = f(x). Other
integrators give other stackings of the same block function f_n (one per block, h = 1):

    euler:  x_{n+1} = x_n + k_1,                          k_1 = f_n(x_n)
    rk2:    x_{n+1} = x_n + f_n(x_n + k_1/2)                              (explicit midpoint)
    rk4:    k_2 = f_n(x_n + k_1/3), k_3 = f_n(x_n − k_1/3 + k_2), k_4 = f_n(x_n + k_1 − k_2 + k_3),
            x_{n+1} = x_n + (k_1 + 3k_2 + 3k_3 + k_4)/8                   (Kutta's 3/8 rule)
    lm:     x_{n+1} = (1 − k_n)·x_n + k_n·x_{n−1} + f_n(x_n)              (linear multi-step)

Each euler/rk2/rk4 block is one fixed-grid step of torchdiffeq's solver ("euler", "midpoint",
"rk4": its rk4 is the 3/8 rule) through papers/node's ODEBlock, so the tableaux are torchdiffeq's,
not a second copy. LM is papers/lm_resnet's rule and initialisation (k_n ~ U(−0.1, 0), the first
block plain).

f_n is a VGG-style double 3x3 convolution in the pre-activation order,
f(x) = conv3x3(ReLU(BN(conv3x3(ReLU(BN(x)))))), so an identity-initialised stack stays a
pre-activation ResNet. An RK block evaluates f_n at several points whose statistics differ: each
of its evaluations (its stages) keeps its own BN running statistics, sharing the BN's affine
parameters, so evaluation mode normalises each stage as training did (the parameters do not
change with the stacking).

The network (the notes' architecture): stem conv3x3(in, C), N blocks of (C, C), one stride-2
downsample — `placement` "stem" (the stem conv has stride 2) or "block" (the first block's) —
then BN-ReLU, global average pool, FC. A downsampling block's first stage reads the
full-resolution input, k_1 = f_n(x_n) with stride 2 in f_n's first conv, and the step goes on from
the subsampled state x_n[:, :, ::2, ::2] (a parameter-free shortcut, option A at equal width):
euler gives the CIFAR ResNet's downsampling block; the others evaluate their later stages on the
subsampled state.

Fair comparisons: at equal N every stacking has the same parameters (LM: N − 1 scalars k_n more);
an rk2 (rk4) block costs 2 (4) evaluations of f, so Euler with 2N (4N) blocks has its
multiply-adds (tests/test_numerical_stacking_model.py counts both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from papers.lm_resnet.model import K_INIT
from papers.node.model import ODEBlock
from papers.resnet.model import conv3x3, one_of

STACKINGS = ("euler", "lm", "rk2", "rk4")
PLACEMENTS = ("stem", "block")
SOLVER = {"euler": "euler", "lm": "euler", "rk2": "midpoint", "rk4": "rk4"}  # torchdiffeq's names
EVALUATIONS = {"euler": 1, "lm": 1, "rk2": 2, "rk4": 4}  # evaluations of f per block (stages)


class StageNorm(nn.Module):
    """BatchNorm with one set of running statistics per integrator stage and one affine map."""

    def __init__(self, channels: int, stages: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels, affine=False) for _ in range(stages))

    def forward(self, x: Tensor, stage: int) -> Tensor:
        stats = self.norms[stage]  # its buffers; the affine map is the shared one
        return F.batch_norm(x, stats.running_mean, stats.running_var, self.weight, self.bias,
                            self.training, stats.momentum, stats.eps)  # fmt: skip


class BlockFunction(nn.Module):
    """f(x) = conv3x3(ReLU(BN(conv3x3(ReLU(BN(x)))))), the BNs' statistics per `stage`."""

    def __init__(self, channels: int, stages: int) -> None:
        super().__init__()
        self.norm1 = StageNorm(channels, stages)
        self.conv1 = conv3x3(channels, channels)
        self.norm2 = StageNorm(channels, stages)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x: Tensor, stage: int = 0, stride: int = 1) -> Tensor:
        out = F.conv2d(F.relu(self.norm1(x, stage)), self.conv1.weight, stride=stride, padding=1)
        return self.conv2(F.relu(self.norm2(out, stage)))


class Stages(nn.Module):
    """f as torchdiffeq's func(t, x) within one step: the i-th call is stage i; with `first` set
    (a downsampling block), stage 0 returns it instead of evaluating f on the subsampled state."""

    def __init__(self, f: BlockFunction) -> None:
        super().__init__()
        self.f = f
        self.calls, self.first = 0, None

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        stage, self.calls = self.calls, self.calls + 1
        return self.first if stage == 0 and self.first is not None else self.f(x, stage)


def subsample(x: Tensor) -> Tensor:
    """The downsampling block's shortcut: every second pixel (parameter-free, option A)."""
    return x[:, :, ::2, ::2]


class Block(nn.Module):
    """One step of the stacking's integrator from x_n with f_n (h = 1), stride 1 or 2."""

    def __init__(self, channels: int, stacking: str, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.stages = Stages(BlockFunction(channels, EVALUATIONS[stacking]))
        self.step = ODEBlock(self.stages, SOLVER[stacking], adjoint=False, steps=1)
        self.register_parameter("k", None)  # an LM block's k_n, set by the network

    @property
    def f(self) -> BlockFunction:
        return self.stages.f

    def forward(self, x: Tensor) -> Tensor:
        """x_{n+1}; for the LM blocks see `lm`."""
        self.stages.calls = 0
        if self.stride == 1:
            return self.step(x)
        self.stages.first = self.f(x, 0, self.stride)
        try:
            return self.step(subsample(x))
        finally:
            self.stages.first = None

    def lm(self, x: Tensor, x_prev: Tensor) -> Tensor:
        """x_{n+1} = (1 − k_n)·x_n + k_n·x_{n−1} + f_n(x_n)."""
        return (1 - self.k) * x + self.k * x_prev + self.f(x)


class StackingNet(nn.Module):
    """Stem conv(in, C) → N blocks of one stacking → BN-ReLU → global average pool → FC.

    Args:
        stacking: euler, lm, rk2 or rk4 (module docstring).
        placement: where the single stride-2 downsample sits: "stem" or "block" (the first).
        blocks: N, the number of blocks (each with its own f_n).
        block_multiple: m, for the equal-multiply-add Euler nets: m·N blocks (m = 2 beside rk2,
            4 beside rk4, whose blocks evaluate f_n m times).
        channels: C, the width of the stem and of every block.
        in_channels, num_classes: the data set's.
    """

    def __init__(
        self,
        *,
        stacking: str = "euler",
        placement: str = "stem",
        blocks: int = 3,
        block_multiple: int = 1,
        channels: int = 64,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        one_of("stacking", stacking, STACKINGS)
        one_of("placement", placement, PLACEMENTS)
        sizes = {"blocks": blocks, "block_multiple": block_multiple, "channels": channels}
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name}: {value!r} must be an integer >= 1")
        self.stacking = stacking
        self.stem = conv3x3(in_channels, channels, 2 if placement == "stem" else 1)
        total = blocks * block_multiple
        strides = [2 if placement == "block" and n == 0 else 1 for n in range(total)]
        self.blocks = nn.ModuleList(Block(channels, stacking, s) for s in strides)
        if stacking == "lm":
            for block in self.blocks[1:]:  # the first block has no x_{n−1}: plain
                block.k = nn.Parameter(torch.empty(()).uniform_(*K_INIT))
        self.norm = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    def features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        if self.stacking != "lm":
            for block in self.blocks:
                x = block(x)
            return x
        # LM: the block after the plain first one takes that block's shortcut as x_{n−1}
        x_prev, x = (x if self.blocks[0].stride == 1 else subsample(x)), self.blocks[0](x)
        for block in self.blocks[1:]:
            x_prev, x = x, block.lm(x, x_prev)
        return x

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.norm(self.features(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))
