"""Dual Path Networks — Chen, Li, Xiao, Jin, Yan, Feng 2017 (arXiv 1707.01629).

Seen as higher-order RNNs, a ResNet reuses features (a residual path, shared state updated in
place) and a DenseNet explores new ones (a densely connected path, every step's output kept). A
dual path architecture carries both (Sec. 4):

    x^k = Σ_{t=1}^{k-1} f_t^k(h^t)                          densely connected path
    y^k = Σ_{t=1}^{k-1} v_t(h^t) = y^{k-1} + φ^{k-1}(y^{k-1})   residual path
    r^k = x^k + y^k                                         the dual path
    h^k = g^k(r^k)

A dual path block (Fig. 2e, the authors' code cypw/DPNs) reads both paths concatenated and runs a
ResNeXt bottleneck over them in the pre-activation order, BN-ReLU before each conv: 1x1 (k_R·s
channels) → grouped 3x3 (k_R·s, G groups, the stride) → 1x1 (R + k), where s = 1, 2, 4, 8 is the
stage's factor, R its residual width and k its increment. The last 1x1's output splits: its first
R channels are added to the residual path, the other k concatenated to the densely connected path

    residual ← residual + out[:R],    dense ← [dense, out[R:]].

The first block of a stage ("proj" in stage 1, "down" with stride 2 after it) replaces both paths
by a 1x1 projection (BN-ReLU-conv, the stage's stride) of R + 2k channels: R start the residual
path, 2k the dense path, so the dense path has (j + 2)·k channels after the stage's j-th block
(the previous stages' dense features reach it only through the projection). The network: a conv
stem (BN-ReLU) and 3x3/2 max pool, four stages at R = 256·s (64·s for DPN-68), a final BN-ReLU of
both paths concatenated, global average pooling, and a 1x1 conv as the classifier.

The configurations (authors' code, `CONFIGS`; stem conv/width, k_R, G, blocks, increments) and
their sizes with 3 input channels and 1000 classes, multiply-adds at 224x224 (ours, to the integer:
tests/test_dpn_model.py) against the paper's as /work/shared/papers.md §7 quotes them ("FLOPs"
being multiply-adds; parameters from the paper's tables, DPN-68's 2.5G from the authors' README):

    network   stem     k_R  G   blocks     increments     params (ours)  MACs (ours)  paper
    DPN-68    3x3/10   128  32  3-4-12-3   16-32-32-64     12,611,602    2.33G        —, 2.5G
    DPN-92    7x7/64    96  32  3-4-20-3   16-32-24-128    37,668,392    6.50G        37.8M, 6.5G
    DPN-98    7x7/96   160  40  3-6-20-3   16-32-32-128    61,570,728   11.67G        61.7M, 11.7G
    DPN-131   7x7/128  160  40  4-8-28-3   16-32-32-128    79,254,504   16.01G        79.5M, 16.0G

timm's dpn68/92/98/131 (the authors' weights, converted) have these parameters, multiply-adds and
module names: their state_dicts load with strict=True and give our outputs. The paper's parameter
counts are 0.13-0.25M above the faithful networks' (37.8M vs 37.67M, 61.7M vs 61.57M, 79.5M vs
79.25M), more than rounding; its multiply-adds round ours but DPN-68's 2.5G, 7% above 2.33G
(convs and the classifier counted, as for papers/resnext). The final BN is followed by a ReLU, as
in the authors' code (BN_AC) and in the network timm 1.0.31 builds (its `fc_act_layer="elu"`
argument does not reach that layer). BN has ε = 1e-3, MXNet's default, as there and in timm.

`CifarDPN`: the same blocks on CIFAR-sized inputs, a 3x3 stride-1 stem without max pool and three
stages at 32/16/8 px (28/14/7 for MNIST), as CIFAR ResNeXt-29 is built (papers/resnext). The paper
has no CIFAR results, so this network is ours, sized for a CPU profile: its defaults (stem 16,
k_R 20, G 4, R 56, blocks 3-3-3, increments 8-16-32) have 307,734 parameters and 36.0M
multiply-adds at 1x28x28 with 10 classes, within 1.3% of CIFAR ResNeXt-29 4x6d at base width 16
(309,002 and 36.5M).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from papers.resnet.model import conv1x1, init_weights, one_of
from papers.resnext.model import at_least_one, grouped_conv3x3

BN_EPS = 1e-3  # MXNet's BatchNorm default, the authors' code (and timm's converted weights)
BLOCK_TYPES = ("proj", "down", "normal")
CONFIGS = {  # the authors' code (cypw/DPNs) and timm: the stem, k_R, G, blocks and increments
    "dpn68": {
        "stem_width": 10,
        "stem_kernel": 3,
        "residual_width": 64,
        "k_r": 128,
        "groups": 32,
        "blocks": (3, 4, 12, 3),
        "increments": (16, 32, 32, 64),
    },
    "dpn92": {
        "stem_width": 64,
        "stem_kernel": 7,
        "residual_width": 256,
        "k_r": 96,
        "groups": 32,
        "blocks": (3, 4, 20, 3),
        "increments": (16, 32, 24, 128),
    },
    "dpn98": {
        "stem_width": 96,
        "stem_kernel": 7,
        "residual_width": 256,
        "k_r": 160,
        "groups": 40,
        "blocks": (3, 6, 20, 3),
        "increments": (16, 32, 32, 128),
    },
    "dpn131": {
        "stem_width": 128,
        "stem_kernel": 7,
        "residual_width": 256,
        "k_r": 160,
        "groups": 40,
        "blocks": (4, 8, 28, 3),
        "increments": (16, 32, 32, 128),
    },
}

DualPath = tuple[Tensor, Tensor]  # (residual path, densely connected path)


def joined(x: Tensor | DualPath) -> Tensor:
    """Both paths as one tensor, the residual path's channels first (a single tensor is the stem's
    output, before the paths split)."""
    return x if isinstance(x, Tensor) else torch.cat(x, dim=1)


class BnReluConv(nn.Module):
    """BN → ReLU → conv, the authors' BN_AC + Conv (pre-activation, He et al. 2016); a 3x3 is
    grouped (papers/resnext's `grouped_conv3x3`)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        if kernel == 3:
            self.conv = grouped_conv3x3(in_channels, out_channels, groups, stride)
        else:
            self.conv = conv1x1(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.relu(self.bn(x)))


class DualPathBlock(nn.Module):
    """A dual path block (the module docstring): a pre-activation grouped bottleneck over both
    paths whose last 1x1 feeds the residual path (`residual_width` channels, added) and the densely
    connected path (`increment` channels, concatenated).

    Args:
        in_channels: both input paths together (the stem's width for the first block).
        bottleneck: the 1x1 and grouped 3x3's width, k_R times the stage's factor.
        residual_width: R, the residual path's width in this stage.
        increment: k, the channels each block adds to the densely connected path.
        groups: G, the grouped 3x3's groups (the ResNeXt cardinality).
        block_type: "proj" (a stage's first block at stride 1: a projection of both paths),
            "down" (the same with stride 2: `c1x1_w_s2`) or "normal" (identity on both paths).

    Submodules as in the authors' code and timm: `c1x1_w_s1`/`c1x1_w_s2` (the projection),
    `c1x1_a`, `c3x3_b`, `c1x1_c`, each a BN-ReLU-conv.
    """

    def __init__(
        self,
        in_channels: int,
        bottleneck: int,
        residual_width: int,
        increment: int,
        groups: int,
        block_type: str = "normal",
    ) -> None:
        super().__init__()
        one_of("block_type", block_type, BLOCK_TYPES)
        for name, value in [
            ("bottleneck", bottleneck),
            ("residual_width", residual_width),
            ("increment", increment),
            ("groups", groups),
        ]:
            at_least_one(name, value)
        if bottleneck % groups:
            raise ValueError(f"groups: {groups} does not divide the bottleneck's {bottleneck}")
        self.residual_width, self.increment, self.block_type = residual_width, increment, block_type
        stride = 2 if block_type == "down" else 1
        self.c1x1_w_s1: BnReluConv | None = None
        self.c1x1_w_s2: BnReluConv | None = None
        if block_type != "normal":
            projection = BnReluConv(in_channels, residual_width + 2 * increment, 1, stride)
            setattr(self, f"c1x1_w_s{stride}", projection)
        self.c1x1_a = BnReluConv(in_channels, bottleneck)
        self.c3x3_b = BnReluConv(bottleneck, bottleneck, 3, stride, groups)
        self.c1x1_c = BnReluConv(bottleneck, residual_width + increment)

    @property
    def projection(self) -> BnReluConv | None:
        return self.c1x1_w_s1 if self.c1x1_w_s1 is not None else self.c1x1_w_s2

    def forward(self, x: Tensor | DualPath) -> DualPath:
        both = joined(x)
        if self.projection is not None:
            starts = self.projection(both)
            residual, dense = starts.split([self.residual_width, 2 * self.increment], dim=1)
        elif isinstance(x, Tensor):
            raise TypeError("a normal dual path block takes (residual, dense), not one tensor")
        else:
            residual, dense = x
        out = self.c1x1_c(self.c3x3_b(self.c1x1_a(both)))
        to_residual, to_dense = out.split([self.residual_width, self.increment], dim=1)
        return residual + to_residual, torch.cat([dense, to_dense], dim=1)

    def extra_repr(self) -> str:
        return f"block_type={self.block_type}, increment={self.increment}"


class Stem(nn.Module):
    """conv → BN → ReLU (the authors' conv1_x_1); timm's `conv1_1` names (`conv`, `bn`)."""

    def __init__(self, in_channels: int, width: int, kernel: int, stride: int) -> None:
        super().__init__()
        padding = kernel // 2
        self.conv = nn.Conv2d(in_channels, width, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(width, eps=BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class FinalBnRelu(nn.Module):
    """Both paths concatenated → BN → ReLU (the authors' conv5_x_x__relu-sp, timm's conv5_bn_ac)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=BN_EPS)

    def forward(self, x: Tensor | DualPath) -> Tensor:
        return F.relu(self.bn(joined(x)))


class DPN(nn.Module):
    """A dual path network of any configuration (defaults: DPN-92): stem → stages of dual path
    blocks → BN-act of both paths → global average pooling → 1x1 conv classifier.

    Stage s (from 0) has `blocks[s]` blocks of bottleneck k_R·2^s, residual width
    `residual_width`·2^s and increment `increments[s]`; the first block of every stage projects
    ("proj" in stage 0, "down" with stride 2 after it). Module names follow the authors' code as
    timm has them (`features.conv1_1`, `features.conv{s+2}_{j}`, `features.conv5_bn_ac`,
    `classifier`), so timm's state_dicts load with strict=True.

    Args:
        blocks: blocks per stage (3-4-20-3 for DPN-92); one stage per entry.
        increments: k per stage, the channels each block adds to the densely connected path.
        k_r: k_R, the first stage's bottleneck width (the 1x1 and grouped 3x3), doubling per stage.
        groups: G, the grouped 3x3's groups; must divide k_r.
        stem_width: the stem conv's filters.
        stem_kernel: the stem conv's kernel (7; 3 for DPN-68 and CIFAR).
        stem_stride: the stem conv's stride (2 on ImageNet, 1 on CIFAR).
        maxpool: a 3x3/2 max pool after the stem (ImageNet).
        residual_width: R of the first stage, the residual path's width, doubling per stage (256;
            64 for DPN-68, timm's `small`).
        in_channels: input channels.
        num_classes: the classifier's outputs.
    """

    def __init__(
        self,
        *,
        blocks: Sequence[int] = (3, 4, 20, 3),
        increments: Sequence[int] = (16, 32, 24, 128),
        k_r: int = 96,
        groups: int = 32,
        stem_width: int = 64,
        stem_kernel: int = 7,
        stem_stride: int = 2,
        maxpool: bool = True,
        residual_width: int = 256,
        in_channels: int = 3,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        blocks, increments = list(blocks), list(increments)
        if not blocks:
            raise ValueError("blocks: [] must give at least one stage")
        if len(increments) != len(blocks):
            n, stages = len(increments), len(blocks)
            raise ValueError(f"increments: {n} values for {stages} stages (blocks {blocks})")
        for name, value in [
            ("k_r", k_r),
            ("groups", groups),
            ("stem_width", stem_width),
            ("stem_kernel", stem_kernel),
            ("stem_stride", stem_stride),
            ("residual_width", residual_width),
            ("in_channels", in_channels),
            ("num_classes", num_classes),
        ]:
            at_least_one(name, value)
        for name, values in [("blocks", blocks), ("increments", increments)]:
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name}: {values} must all be integers >= 1")
        if k_r % groups:
            raise ValueError(f"groups: {groups} does not divide k_r {k_r}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv1_1"] = Stem(in_channels, stem_width, stem_kernel, stem_stride)
        if maxpool:
            layers["conv1_pool"] = nn.MaxPool2d(3, stride=2, padding=1)
        channels = stem_width
        for s, (n, increment) in enumerate(zip(blocks, increments, strict=True)):
            width, bottleneck = residual_width * 2**s, k_r * 2**s
            for j in range(1, n + 1):
                kind = "normal" if j > 1 else ("proj" if s == 0 else "down")
                block = DualPathBlock(channels, bottleneck, width, increment, groups, kind)
                layers[f"conv{s + 2}_{j}"] = block
                channels = width + (j + 2) * increment
        layers["conv5_bn_ac"] = FinalBnRelu(channels)
        self.features = nn.Sequential(layers)
        self.num_features = channels
        self.classifier = nn.Conv2d(channels, num_classes, 1)  # the authors' fc6, as a 1x1 conv
        init_weights(self.features)  # He init of the convs; the classifier keeps torch's default

    @property
    def blocks(self) -> list[DualPathBlock]:
        """All dual path blocks in order of depth."""
        return [m for m in self.features if isinstance(m, DualPathBlock)]

    @property
    def stages(self) -> list[list[DualPathBlock]]:
        """The blocks stage by stage (a stage starts at each projecting block)."""
        stages: list[list[DualPathBlock]] = []
        for block in self.blocks:
            if block.projection is not None:
                stages.append([])
            stages[-1].append(block)
        return stages

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return torch.flatten(self.classifier(x), 1)


class ImageNetDPN(DPN):
    """DPN-68/92/98/131 by name (`CONFIGS`, the authors' code): timm's `dpn68`, ... to the module.

    Args:
        name: "dpn68", "dpn92", "dpn98" or "dpn131".
        in_channels: input channels.
        num_classes: the classifier's outputs.
    """

    def __init__(
        self,
        name: str = "dpn92",
        *,
        in_channels: int = 3,
        num_classes: int = 1000,
    ) -> None:
        one_of("name", name, list(CONFIGS))
        super().__init__(
            **CONFIGS[name],
            in_channels=in_channels,
            num_classes=num_classes,
        )
        self.name = name


def dpn68(**kwargs: Any) -> ImageNetDPN:
    """DPN-68 (`CONFIGS["dpn68"]`); keywords as ImageNetDPN's."""
    return ImageNetDPN("dpn68", **kwargs)


def dpn92(**kwargs: Any) -> ImageNetDPN:
    """DPN-92 (`CONFIGS["dpn92"]`); keywords as ImageNetDPN's."""
    return ImageNetDPN("dpn92", **kwargs)


def dpn98(**kwargs: Any) -> ImageNetDPN:
    """DPN-98 (`CONFIGS["dpn98"]`); keywords as ImageNetDPN's."""
    return ImageNetDPN("dpn98", **kwargs)


def dpn131(**kwargs: Any) -> ImageNetDPN:
    """DPN-131 (`CONFIGS["dpn131"]`); keywords as ImageNetDPN's."""
    return ImageNetDPN("dpn131", **kwargs)


class CifarDPN(DPN):
    """A dual path network for 32x32 (or 28x28) inputs: a 3x3 stride-1 stem conv, no max pool, one
    stage per entry of `blocks` (three: 32/16/8 px, as CIFAR ResNeXt-29), the ImageNet DPN's blocks.
    The paper has no CIFAR network; the defaults are a small one for a CPU profile, matched to
    CIFAR ResNeXt-29 4x6d at base width 16 in parameters and multiply-adds (the module docstring).

    Args:
        blocks: blocks per stage.
        increments: k per stage (the densely connected path's growth per block).
        k_r: k_R, the first stage's bottleneck width, doubling per stage.
        groups: G, the grouped 3x3's groups; must divide k_r.
        stem_width: the stem conv's filters.
        residual_width: R of the first stage, doubling per stage.
        in_channels: 3 for CIFAR, 1 for (Fashion-)MNIST at 28x28.
        num_classes: the classifier's outputs.
    """

    def __init__(
        self,
        *,
        blocks: Sequence[int] = (3, 3, 3),
        increments: Sequence[int] = (8, 16, 32),
        k_r: int = 20,
        groups: int = 4,
        stem_width: int = 16,
        residual_width: int = 56,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__(
            blocks=blocks,
            increments=increments,
            k_r=k_r,
            groups=groups,
            stem_width=stem_width,
            stem_kernel=3,
            stem_stride=1,
            maxpool=False,
            residual_width=residual_width,
            in_channels=in_channels,
            num_classes=num_classes,
        )
