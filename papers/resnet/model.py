"""Deep Residual Learning for Image Recognition — He, Zhang, Ren, Sun 2015 (arXiv 1512.03385).

A residual block learns the residual F of a mapping and adds its input back (post-activation):

    y = ReLU(F(x, {W_i}) + shortcut(x)),   F = BN(conv3x3(ReLU(BN(conv3x3(x)))))      (Eq. 1-2)

shortcut(x) is the identity, or on a dimension increase one of the paper's options:
A) identity, subsampled by stride 2 and zero-padded to the new width (no parameters);
B) a 1x1 projection W_s x + BN on a dimension increase, identity otherwise;
C) a projection on every block. A plain net drops the shortcut: y = ReLU(F(x)).

CIFAR-10 ResNet-(6n+2) (Sec. 4.2): 3x3 conv 16, then 3 stages × n basic blocks at 32/16/8 px with
16/32/64 filters, global average pooling, FC. This file guarantees, with option A, 3 input
channels and 10 classes (Table 6 prints the rounded count):

    depth   n     params (ours)   Table 6
    20      3       269,722       0.27M
    32      5       464,154       0.46M
    44      7       658,586       0.66M
    56      9       853,018       0.85M
    110     18    1,727,962       1.7M
    1202    200  19,421,274       19.4M

Option A adds no parameters over the plain net; option B adds 2,752 (two projections).

ImageNet ResNet (Table 1): 7x7/2 conv 64, 3x3/2 max pool, four stages at 64/128/256/512 filters,
basic blocks for 18/34, bottlenecks 1x1-3x3-1x1 (expansion 4) for 50+, option B. Multiply-adds
at 224x224, 1000 classes (ours: `common.metrics.count_macs`):

    depth   params (ours)   MACs, stride in 1x1 (paper)   in 3x3 (torchvision)   Table 1
    18       11,689,512      1.81G                         1.81G                  1.8G
    34       21,797,672      3.66G                         3.66G                  3.6G
    50       25,557,032      3.86G                         4.09G                  3.8G
    101      44,549,160      7.57G                         7.80G                  7.6G
    152      60,192,808     11.28G                        11.51G                 11.3G

The parts later papers (pre-activation, wide, ResNeXt, stochastic depth, lesions) build on live
here once, as arguments: conv3x3/conv1x1, option A's `ZeroPadShortcut` (subsampling by slicing,
or by average pooling as in stochastic depth), `projection`, the block order — "post" as above,
or "pre" (He et al. 2016, Identity Mappings):

    y = x + F(x),   F = conv3x3(ReLU(BN(conv3x3(ReLU(BN(x))))))

with a BN-ReLU after the last addition — the stage layout (`stage_specs`), the builder
(`build_stages`, one block factory for every block), the `ResNet` trunk and He init. A network is
named by its class path and keyword arguments, e.g. `papers.resnet.model.CifarResNet`, depth 110.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SHORTCUTS = ("A", "B", "C")
SUBSAMPLES = ("slice", "avg_pool")
ORDERS = ("post", "pre")
STRIDE_IN = ("paper", "torchvision")
CIFAR_WIDTHS = (16, 32, 64)
IMAGENET_WIDTHS = (64, 128, 256, 512)
IMAGENET_REPEATS = {  # Table 1: blocks per stage conv2_x ... conv5_x
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


def one_of(name: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise a ValueError naming the argument and the allowed values unless `value` is one."""
    if value not in allowed:
        raise ValueError(f"{name}: {value!r} is not one of {list(allowed)}")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # No bias: the BN that follows has its own shift.
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: the identity, subsampled by `stride`, zero-padded to the new width (no parameters).

    subsample="slice" keeps every stride-th pixel (He et al. 2015); "avg_pool" averages
    stride x stride windows (the transition of Huang et al. 2016).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, subsample: str = "slice"
    ) -> None:
        super().__init__()
        one_of("subsample", subsample, SUBSAMPLES)
        self.extra_channels = out_channels - in_channels
        self.stride, self.subsample = stride, subsample

    def forward(self, x: Tensor) -> Tensor:
        if self.subsample == "slice":
            x = x[:, :, :: self.stride, :: self.stride]
        else:  # ceil_mode matches the stride-2 conv's output size on odd inputs (e.g. 7 -> 4).
            x = F.avg_pool2d(x, self.stride, ceil_mode=True)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        extra, stride, subsample = self.extra_channels, self.stride, self.subsample
        return f"extra_channels={extra}, stride={stride}, subsample={subsample}"


def projection(in_channels: int, out_channels: int, stride: int, order: str = "post") -> nn.Module:
    """Options B/C: W_s x as a 1x1 conv + BN (Eq. 2); pre-activation: the conv alone, its input
    being the block's BN-ReLU already (as in fb.resnet.torch's preresnet)."""
    conv = conv1x1(in_channels, out_channels, stride)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels)) if order == "post" else conv


def make_shortcut(
    option: str,
    in_channels: int,
    out_channels: int,
    stride: int,
    subsample: str = "slice",
    order: str = "post",
) -> nn.Module:
    """The shortcut of one block under option A, B or C."""
    increases = stride != 1 or in_channels != out_channels
    if option == "C" or (option == "B" and increases):
        return projection(in_channels, out_channels, stride, order)
    if option == "A" and increases:
        return ZeroPadShortcut(in_channels, out_channels, stride, subsample)
    return nn.Identity()


class ResidualBlock(nn.Module):
    """A residual block over the convs of its branch F, each paired with a BN, in either order.

    post (He et al. 2015):  y = ReLU(F(x) + shortcut(x)),  F = BN(conv(... ReLU(BN(conv(x)))))
    pre  (He et al. 2016):  y = x + F(x),                  F = conv(... ReLU(BN(conv(ReLU(BN(x))))))
    A plain block drops the shortcut. In the pre order a shortcut that changes the shape (zero-pad
    or projection) takes the activated ReLU(BN(x)) as F does; `preactivate=False` skips the first
    BN-ReLU for the unit right after conv1, whose input the stem already activated, before the
    split into two paths (He et al. 2016 on the first unit).

    Submodule names follow torchvision (conv1, bn1, ..., downsample) so its ImageNet weights load
    unchanged; `downsample` holds the paper's shortcut, whichever option it is.
    """

    def __init__(
        self,
        convs: Sequence[nn.Conv2d],
        shortcut: nn.Module | None,
        order: str = "post",
        preactivate: bool = True,
    ) -> None:
        super().__init__()
        one_of("order", order, ORDERS)
        self.order, self.num_convs = order, len(convs)
        self.out_channels = convs[-1].out_channels
        for i, conv in enumerate(convs, start=1):
            self.add_module(f"conv{i}", conv)
            channels = conv.out_channels if order == "post" else conv.in_channels
            has_bn = order == "post" or i > 1 or preactivate
            self.add_module(f"bn{i}", nn.BatchNorm2d(channels) if has_bn else None)
        self.downsample = shortcut

    @property
    def shortcut(self) -> nn.Module | None:
        return self.downsample

    def layers(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
        n = range(1, self.num_convs + 1)
        return [(getattr(self, f"conv{i}"), getattr(self, f"bn{i}")) for i in n]

    def residual(self, x: Tensor) -> Tensor:
        """F(x); in the pre order x is already ReLU(BN(x)), the block's first activation."""
        last = self.num_convs - 1
        for i, (conv, bn) in enumerate(self.layers()):
            if self.order == "post":
                x = bn(conv(x)) if i == last else F.relu(bn(conv(x)))
            else:
                x = conv(x if i == 0 else F.relu(bn(x)))
        return x

    def forward(self, x: Tensor) -> Tensor:
        if self.order == "post":
            out = self.residual(x)
            return F.relu(out if self.shortcut is None else out + self.shortcut(x))
        activated = x if self.bn1 is None else F.relu(self.bn1(x))
        out = self.residual(activated)
        if self.shortcut is None:
            return out
        clean = isinstance(self.shortcut, nn.Identity)  # the unchanged identity keeps x itself
        return out + self.shortcut(x if clean else activated)


class BasicBlock(ResidualBlock):
    """Two 3x3 convs (Fig. 5 left); the first carries the stride."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        shortcut: nn.Module | None = None,
        order: str = "post",
        preactivate: bool = True,
    ) -> None:
        convs = [conv3x3(in_channels, width, stride), conv3x3(width, width)]
        super().__init__(convs, shortcut, order, preactivate)


class Bottleneck(ResidualBlock):
    """1x1 reduce → 3x3 → 1x1 expand to 4·width (Fig. 5 right).

    stride_in="paper" strides the first 1x1 (the original v1); "torchvision" strides the 3x3
    (v1.5), so the first 1x1 runs at 4x the positions: ~6% more multiply-adds in ResNet-50.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        shortcut: nn.Module | None = None,
        order: str = "post",
        preactivate: bool = True,
        stride_in: str = "paper",
    ) -> None:
        one_of("stride_in", stride_in, STRIDE_IN)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in == "paper" else (1, stride)
        convs = [
            conv1x1(in_channels, width, stride_1x1),
            conv3x3(width, width, stride_3x3),
            conv1x1(width, width * self.expansion),
        ]
        super().__init__(convs, shortcut, order, preactivate)


class BlockSpec(NamedTuple):
    """Where a block sits: its input channels, its width, its stride and its output channels."""

    in_channels: int
    width: int
    stride: int
    out_channels: int


def stage_specs(
    stem_width: int, widths: Sequence[int], repeats: Sequence[int], expansion: int = 1
) -> list[list[BlockSpec]]:
    """Every block's spec, stage by stage; the first block of stages 2+ halves the resolution."""
    stages = []
    for s, (width, n) in enumerate(zip(widths, repeats, strict=True)):
        in_channels = stem_width if s == 0 else widths[s - 1] * expansion
        out_channels = width * expansion
        first = BlockSpec(in_channels, width, 1 if s == 0 else 2, out_channels)
        stages.append([first] + [BlockSpec(out_channels, width, 1, out_channels)] * (n - 1))
    return stages


def blocks_per_stage(depth: int) -> int:
    """n of a CIFAR ResNet-(6n+2): 3 stages × n blocks × 2 layers + the first conv + the FC."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth: {depth} is not of the form 6n+2 (20, 32, 44, 56, 110, 1202, ...)")
    return (depth - 2) // 6


def cifar_stage_specs(depth: int) -> list[list[BlockSpec]]:
    """The 3 stages × n basic blocks of CIFAR ResNet-`depth` at widths 16/32/64."""
    return stage_specs(CIFAR_WIDTHS[0], CIFAR_WIDTHS, [blocks_per_stage(depth)] * 3)


def build_stages(
    specs: list[list[BlockSpec]],
    block: Callable[..., ResidualBlock],
    shortcut: str = "A",
    *,
    subsample: str = "slice",
    plain: bool = False,
    order: str = "post",
) -> list[list[ResidualBlock]]:
    """`block(in_channels, width, stride, shortcut=...)` for every spec, with option `shortcut`'s
    shortcut (none if `plain`). Pre-order blocks also get `order="pre"` and, for the network's
    first block only, `preactivate=False`; post-order blocks keep their defaults."""
    one_of("shortcut", shortcut, SHORTCUTS)
    one_of("subsample", subsample, SUBSAMPLES)
    one_of("order", order, ORDERS)

    def make(spec: BlockSpec, first: bool) -> ResidualBlock:
        args = (spec.in_channels, spec.out_channels, spec.stride, subsample, order)
        sc = None if plain else make_shortcut(shortcut, *args)
        pre = {"order": order, "preactivate": not first} if order == "pre" else {}
        return block(spec.in_channels, spec.width, spec.stride, shortcut=sc, **pre)

    return [
        [make(spec, s == i == 0) for i, spec in enumerate(stage)] for s, stage in enumerate(specs)
    ]


def init_weights(model: nn.Module) -> None:
    """He init (Sec. 3.4) of every conv; BN starts at γ = 1, β = 0; FC keeps torch's default."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


class ResNet(nn.Module):
    """conv1 → BN → ReLU [→ 3x3/2 max pool] → stages of residual blocks → global avg pool → fc.

    order="pre" adds a BN-ReLU (`final_bn`) after the last addition (He et al. 2016); the stem's
    BN-ReLU is then the first unit's activation. Submodule names follow torchvision (conv1, bn1,
    layer1..layerK, fc) for weight compatibility; `stages` and `blocks` give the paper's view.
    """

    def __init__(
        self,
        conv1: nn.Conv2d,
        stages: Sequence[Sequence[ResidualBlock]],
        num_classes: int,
        maxpool: bool = False,
        order: str = "post",
    ) -> None:
        super().__init__()
        one_of("order", order, ORDERS)
        self.conv1 = conv1
        self.bn1 = nn.BatchNorm2d(conv1.out_channels)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if maxpool else nn.Identity()
        for s, blocks in enumerate(stages, start=1):
            self.add_module(f"layer{s}", nn.Sequential(*blocks))
        out_channels = stages[-1][-1].out_channels
        self.final_bn = nn.BatchNorm2d(out_channels) if order == "pre" else None
        self.fc = nn.Linear(out_channels, num_classes)
        init_weights(self)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [module for name, module in self.named_children() if name.startswith("layer")]

    @property
    def blocks(self) -> list[nn.Module]:
        """All residual blocks in order of depth (for lesion studies and stochastic depth)."""
        return [block for stage in self.stages for block in stage]

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x)
        if self.final_bn is not None:
            x = F.relu(self.final_bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class CifarResNet(ResNet):
    """CIFAR ResNet-(6n+2) or its plain counterpart (Sec. 4.2, Table 6, Fig. 6).

    Args:
        depth: 6n+2 weighted layers (20, 32, 44, 56, 110, 1202 in the paper).
        shortcut: "A" (zero-padding identity, the paper's CIFAR choice), "B" or "C".
        plain: no shortcuts at all — the plain net of the same depth.
        order: "post" (this paper) or "pre" (pre-activation, He et al. 2016).
        in_channels: 3 for CIFAR, 1 for (Fashion-)MNIST at 28x28.
        num_classes: outputs of the final FC.
    """

    def __init__(
        self,
        depth: int,
        shortcut: str = "A",
        plain: bool = False,
        order: str = "post",
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        specs = cifar_stage_specs(depth)
        stages = build_stages(specs, BasicBlock, shortcut, plain=plain, order=order)
        super().__init__(conv3x3(in_channels, CIFAR_WIDTHS[0]), stages, num_classes, order=order)


class ImageNetResNet(ResNet):
    """ImageNet ResNet-18/34/50/101/152 (Table 1) or a plain net (Table 2's plain-18/34).

    Args:
        depth: 18, 34 (basic blocks), 50, 101, 152 (bottlenecks).
        shortcut: "B" (projection on dimension increase, the paper's default), "A" or "C".
        plain: no shortcuts at all.
        stride_in: "paper" strides a bottleneck's first 1x1, "torchvision" its 3x3.
        order: "post" (this paper) or "pre" (pre-activation, He et al. 2016).
        in_channels: input channels.
        num_classes: outputs of the final FC.
    """

    def __init__(
        self,
        depth: int,
        shortcut: str = "B",
        plain: bool = False,
        stride_in: str = "paper",
        order: str = "post",
        in_channels: int = 3,
        num_classes: int = 1000,
    ) -> None:
        one_of("depth", depth, list(IMAGENET_REPEATS))
        one_of("stride_in", stride_in, STRIDE_IN)
        block = BasicBlock if depth < 50 else partial(Bottleneck, stride_in=stride_in)
        expansion = 1 if depth < 50 else Bottleneck.expansion
        specs = stage_specs(IMAGENET_WIDTHS[0], IMAGENET_WIDTHS, IMAGENET_REPEATS[depth], expansion)
        stages = build_stages(specs, block, shortcut, plain=plain, order=order)
        conv1 = nn.Conv2d(in_channels, IMAGENET_WIDTHS[0], 7, stride=2, padding=3, bias=False)
        super().__init__(conv1, stages, num_classes, maxpool=True, order=order)
