"""Wide Residual Networks — Zagoruyko & Komodakis 2016 (arXiv 1605.07146).

A wide residual network keeps the full pre-activation unit of He et al. 2016 (papers/preact_resnet)
and trades depth for width: each unit of WRN-d-k is

    x_{l+1} = x_l + F(x_l),   F = conv3x3(dropout(ReLU(BN(conv3x3(ReLU(BN(x_l)))))))    B(3,3)

with k times the filters of the thin network (Table 1): conv1 3x3 16, then conv2/conv3/conv4 of N
units each at 16k/32k/64k filters and 32/16/8 px, BN-ReLU, global average pooling, FC. Depth is
6N+4 whatever the block type (szagoruyko/wide-residual-networks counts N so); the other block
types of Table 2 list their kernels, B(1,3,1) being 1x1, 3x3, 1x1, all at the unit's width. A 1x1
projection sits on the shortcut where the width or resolution changes (on ReLU(BN(x)), as F's
first conv does), the identity elsewhere; the first conv of a unit carries its stride. Dropout
(Sec. 2.4: 0.3 on CIFAR, 0.4 on SVHN) sits before every conv of F but the first: between the two
convs of B(3,3), as in the official code.

The unit is papers/resnet's `ResidualBlock` in the pre order, which is what papers/preact_resnet's
`full_preact` unit computes (tests/test_wrn_model.py holds the two equal); this file only chooses
its kernels and adds the dropout. conv1's BN-ReLU is the first unit's activation (He et al.'s
layout); the official code applies it inside the first unit instead, the same network for k > 1
and, for k = 1 (no projection there), an identity shortcut that carries conv1's raw output.
Parameters and multiply-adds at 32x32 with 3 input channels and 10 classes (ours, to the
integer: tests/test_wrn_model.py) against the paper's rounded counts:

    network              N   k    params (ours)   MACs (ours)   paper
    WRN-40-4             6   4     8,949,210      1.30G         8.9M   (Table 5)
    WRN-16-8             2   8    10,961,370      1.55G         11.0M  (Table 5)
    WRN-28-10            4   10   36,479,194      5.24G         36.5M  (Table 5)
    WRN-16-4             2   4     2,748,890      0.39G         —      (Table 6)
    ResNet-52-1          8   1       758,362      0.11G         —      (Table 6)
    WRN-28-2, B(3,3)     4   2     1,467,610      0.21G         1.5M   (Table 2)
    WRN-40-2, B(1,3,1)   6   2     1,429,082      0.21G         (Table 2)
    WRN-40-2, B(3,1)     6   2     1,211,354      0.18G
    WRN-40-2, B(1,3)     6   2     1,297,370      0.19G
    WRN-40-2, B(3,1,1)   6   2     1,343,066      0.20G
    WRN-22-2, B(3,1,3)   3   2     1,145,498      0.17G

ImageNet WRN-50-2-bottleneck (Sec. 3): torchvision's `wide_resnet50_2`, the post-activation
bottleneck ResNet-50 whose inner 1x1 and 3x3 convs are k = 2 times wider (the 3x3 carries the
stride, as in fb.resnet.torch, which the official code builds on): 68,883,240 parameters (paper:
68.9M), 11.40G multiply-adds at 224x224.
"""

from __future__ import annotations

import re
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from papers.resnet.model import (
    IMAGENET_REPEATS,
    IMAGENET_WIDTHS,
    ResidualBlock,
    ResNet,
    build_stages,
    conv1x1,
    conv3x3,
    one_of,
    stage_specs,
)

BLOCK_TYPES = ("B(3,3)", "B(3,1,3)", "B(1,3,1)", "B(1,3)", "B(3,1)", "B(3,1,1)")  # Table 2
CIFAR_WIDTHS = (16, 32, 64)  # conv2, conv3, conv4 of Table 1 before widening


def kernels(block_type: str) -> tuple[int, ...]:
    """The kernel sizes of a block type, "B(1,3,1)" → (1, 3, 1)."""
    one_of("block_type", block_type, BLOCK_TYPES)
    return tuple(int(k) for k in re.findall(r"\d", block_type))


def units_per_stage(depth: int) -> int:
    """N of WRN-depth-k: depth = 6N+4 whatever the block type (the official code's count)."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"depth: {depth} is not of the form 6N+4 (10, 16, 22, 28, 40, ...)")
    return (depth - 4) // 6


def conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return (
        conv3x3(in_channels, out_channels, stride)
        if kernel == 3
        else conv1x1(in_channels, out_channels, stride)
    )


class WideUnit(ResidualBlock):
    """A full pre-activation unit of block type B(k_1, ..., k_m), all convs at `width` filters,
    with dropout p before every conv of F but the first (the module docstring's equation)."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        shortcut: nn.Module | None = None,
        order: str = "pre",
        preactivate: bool = True,
        *,
        block_type: str = "B(3,3)",
        dropout: float = 0.0,
    ) -> None:
        one_of("order", order, ("pre",))
        first, *rest = kernels(block_type)
        convs = [conv(in_channels, width, first, stride)] + [conv(width, width, k) for k in rest]
        super().__init__(convs, shortcut, order, preactivate)
        self.block_type, self.dropout = block_type, dropout

    def residual(self, x: Tensor) -> Tensor:
        """F(x), x already ReLU(BN(x)) (the unit's first activation)."""
        for i, (conv_i, bn) in enumerate(self.layers()):
            if i:
                x = F.dropout(F.relu(bn(x)), self.dropout, self.training)
            x = conv_i(x)
        return x

    def extra_repr(self) -> str:
        return f"block_type={self.block_type}, dropout={self.dropout}"


class WideResNet(ResNet):
    """WRN-d-k on CIFAR/SVHN-sized inputs (Table 1), any block type of Table 2.

    Args:
        depth: 6N+4 (16, 22, 28, 40, 52, ...), N units per stage whatever the block type.
        k: the widening factor: conv2/3/4 have 16k/32k/64k filters (k = 1: the thin ResNet).
        block_type: the convs of a unit (BLOCK_TYPES), B(3,3) the paper's choice.
        dropout: p of the dropout between the convs, in [0, 1) (0.3 on CIFAR, 0.4 on SVHN).
        in_channels: 3 for CIFAR/SVHN, 1 for (Fashion-)MNIST at 28x28.
        num_classes: outputs of the final FC.
    """

    def __init__(
        self,
        depth: int,
        k: int = 1,
        block_type: str = "B(3,3)",
        dropout: float = 0.0,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        kernels(block_type)  # a ValueError naming block_type unless it is one of BLOCK_TYPES
        n = units_per_stage(depth)
        if k < 1:
            raise ValueError(f"k: {k} must be a widening factor >= 1")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout: {dropout} must be in [0, 1)")
        widths = [w * k for w in CIFAR_WIDTHS]
        specs = stage_specs(CIFAR_WIDTHS[0], widths, [n] * 3)
        unit = partial(WideUnit, block_type=block_type, dropout=dropout)
        stages = build_stages(specs, unit, "B", order="pre")
        super().__init__(conv3x3(in_channels, CIFAR_WIDTHS[0]), stages, num_classes, order="pre")


class WideBottleneck(ResidualBlock):
    """ResNet's post-activation bottleneck with its inner convs k times wider:
    1x1 (k·width) → 3x3 (k·width, the stride) → 1x1 (4·width), y = ReLU(F(x) + shortcut(x))."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        shortcut: nn.Module | None = None,
        *,
        k: int = 2,
    ) -> None:
        inner = k * width
        convs = [
            conv1x1(in_channels, inner),
            conv3x3(inner, inner, stride),
            conv1x1(inner, width * self.expansion),
        ]
        super().__init__(convs, shortcut)


class ImageNetWideResNet(ResNet):
    """WRN-50-2-bottleneck (and WRN-101-2, WRN-152-2): ImageNet ResNet-depth (Table 1 of He et al.
    2015, option B) with every bottleneck's inner convs k times wider; torchvision's names.

    Args:
        depth: 50, 101 or 152.
        k: the widening factor of the inner convs (2 in the paper).
        in_channels: input channels.
        num_classes: outputs of the final FC.
    """

    def __init__(
        self, depth: int = 50, k: int = 2, in_channels: int = 3, num_classes: int = 1000
    ) -> None:
        one_of("depth", depth, [d for d in IMAGENET_REPEATS if d >= 50])
        if k < 1:
            raise ValueError(f"k: {k} must be a widening factor >= 1")
        expansion = WideBottleneck.expansion
        specs = stage_specs(IMAGENET_WIDTHS[0], IMAGENET_WIDTHS, IMAGENET_REPEATS[depth], expansion)
        stages = build_stages(specs, partial(WideBottleneck, k=k), "B")
        conv1 = nn.Conv2d(in_channels, IMAGENET_WIDTHS[0], 7, stride=2, padding=3, bias=False)
        super().__init__(conv1, stages, num_classes, maxpool=True)
