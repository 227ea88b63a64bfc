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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SHORTCUTS = ("A", "B", "C")
STRIDE_IN = ("paper", "torchvision")
CIFAR_WIDTHS = (16, 32, 64)
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)  # Table 6
IMAGENET_WIDTHS = (64, 128, 256, 512)
IMAGENET_REPEATS = {  # Table 1: blocks per stage conv2_x ... conv5_x
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # No bias: the BN that follows has its own shift.
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class ShortcutA(nn.Module):
    """Option A: identity that subsamples by `stride` and zero-pads the extra channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}, stride={self.stride}"


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Options B/C: W_s x as a 1x1 conv + BN (Eq. 2)."""
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


def make_shortcut(option: str, in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The shortcut of one block under option A, B or C."""
    increases = stride != 1 or in_channels != out_channels
    if option == "C" or (option == "B" and increases):
        return projection(in_channels, out_channels, stride)
    if option == "A" and increases:
        return ShortcutA(in_channels, out_channels, stride)
    return nn.Identity()


class ResidualBlock(nn.Module):
    """y = ReLU(F(x) + shortcut(x)); y = ReLU(F(x)) when `shortcut` is None (plain net).

    Submodule names follow torchvision (conv1, bn1, ..., downsample) so its ImageNet weights load
    unchanged; `downsample` holds the paper's shortcut, whichever option it is.
    """

    expansion = 1
    out_channels: int
    downsample: nn.Module | None

    @property
    def shortcut(self) -> nn.Module | None:
        return self.downsample

    def residual(self, x: Tensor) -> Tensor:
        """F(x), the residual function."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        out = self.residual(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class BasicBlock(ResidualBlock):
    """Two 3x3 convs (Fig. 5 left); the first carries the stride."""

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, shortcut: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.out_channels = width
        self.conv1 = conv3x3(in_channels, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = shortcut

    def residual(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


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
        stride_in: str = "paper",
    ) -> None:
        super().__init__()
        self.out_channels = width * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in == "paper" else (1, stride)
        self.conv1 = conv1x1(in_channels, width, stride_1x1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride_3x3)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, self.out_channels)
        self.bn3 = nn.BatchNorm2d(self.out_channels)
        self.downsample = shortcut

    def residual(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class BlockSpec(NamedTuple):
    """Where a block sits: its input channels, its width and its stride."""

    in_channels: int
    width: int
    stride: int


def stage_specs(
    stem_width: int, widths: Sequence[int], repeats: Sequence[int], expansion: int = 1
) -> list[list[BlockSpec]]:
    """Every block's spec, stage by stage; the first block of stages 2+ halves the resolution."""
    stages = []
    for s, (width, n) in enumerate(zip(widths, repeats, strict=True)):
        in_channels = stem_width if s == 0 else widths[s - 1] * expansion
        first = BlockSpec(in_channels, width, stride=1 if s == 0 else 2)
        stages.append([first] + [BlockSpec(width * expansion, width, 1)] * (n - 1))
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
    expansion: int,
    shortcut: str,
    plain: bool,
) -> list[list[ResidualBlock]]:
    """Instantiate `block` for every spec, with the shortcut of option `shortcut` (or none)."""
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut: {shortcut!r} is not one of {list(SHORTCUTS)}")

    def shortcut_of(spec: BlockSpec) -> nn.Module | None:
        if plain:
            return None
        return make_shortcut(shortcut, spec.in_channels, spec.width * expansion, spec.stride)

    return [[block(*spec, shortcut=shortcut_of(spec)) for spec in stage] for stage in specs]


def init_weights(model: nn.Module) -> None:
    """He init (Sec. 3.4) of every conv; BN starts at γ = 1, β = 0; FC keeps torch's default."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


class ResNet(nn.Module):
    """conv1 → BN → ReLU [→ 3x3/2 max pool] → stages of residual blocks → global avg pool → fc.

    Submodule names follow torchvision (conv1, bn1, layer1..layerK, fc) for weight compatibility;
    `stages` and `blocks` give the paper's view of the same modules.
    """

    def __init__(
        self,
        conv1: nn.Conv2d,
        stages: Sequence[Sequence[ResidualBlock]],
        num_classes: int,
        maxpool: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = conv1
        self.bn1 = nn.BatchNorm2d(conv1.out_channels)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if maxpool else nn.Identity()
        for s, blocks in enumerate(stages, start=1):
            self.add_module(f"layer{s}", nn.Sequential(*blocks))
        self.fc = nn.Linear(stages[-1][-1].out_channels, num_classes)
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
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class CifarResNet(ResNet):
    """CIFAR ResNet-(6n+2) or its plain counterpart (Sec. 4.2, Table 6, Fig. 6).

    Args:
        depth: 6n+2 weighted layers (20, 32, 44, 56, 110, 1202 in the paper).
        shortcut: "A" (zero-padding identity, the paper's CIFAR choice), "B" or "C".
        plain: no shortcuts at all — the plain net of the same depth.
        in_channels: 3 for CIFAR, 1 for (Fashion-)MNIST at 28x28.
        num_classes: outputs of the final FC.
    """

    def __init__(
        self,
        depth: int,
        shortcut: str = "A",
        plain: bool = False,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        stages = build_stages(cifar_stage_specs(depth), BasicBlock, 1, shortcut, plain)
        super().__init__(conv3x3(in_channels, CIFAR_WIDTHS[0]), stages, num_classes)


class ImageNetResNet(ResNet):
    """ImageNet ResNet-18/34/50/101/152 (Table 1) or a plain net (Table 2's plain-18/34).

    Args:
        depth: 18, 34 (basic blocks), 50, 101, 152 (bottlenecks).
        shortcut: "B" (projection on dimension increase, the paper's default), "A" or "C".
        plain: no shortcuts at all.
        stride_in: "paper" strides a bottleneck's first 1x1, "torchvision" its 3x3.
        in_channels: input channels.
        num_classes: outputs of the final FC.
    """

    def __init__(
        self,
        depth: int,
        shortcut: str = "B",
        plain: bool = False,
        stride_in: str = "paper",
        in_channels: int = 3,
        num_classes: int = 1000,
    ) -> None:
        if depth not in IMAGENET_REPEATS:
            raise ValueError(f"depth: {depth} is not one of {list(IMAGENET_REPEATS)}")
        if stride_in not in STRIDE_IN:
            raise ValueError(f"stride_in: {stride_in!r} is not one of {list(STRIDE_IN)}")
        block = BasicBlock if depth < 50 else partial(Bottleneck, stride_in=stride_in)
        expansion = 1 if depth < 50 else Bottleneck.expansion
        specs = stage_specs(IMAGENET_WIDTHS[0], IMAGENET_WIDTHS, IMAGENET_REPEATS[depth], expansion)
        stages = build_stages(specs, block, expansion, shortcut, plain)
        conv1 = nn.Conv2d(in_channels, IMAGENET_WIDTHS[0], 7, stride=2, padding=3, bias=False)
        super().__init__(conv1, stages, num_classes, maxpool=True)


MODELS: dict[str, Callable[..., ResNet]] = {
    **{f"resnet{d}": partial(CifarResNet, d) for d in CIFAR_DEPTHS},
    **{f"plain{d}": partial(CifarResNet, d, plain=True) for d in CIFAR_DEPTHS},
    **{f"resnet{d}": partial(ImageNetResNet, d) for d in IMAGENET_REPEATS},
    "plain18": partial(ImageNetResNet, 18, plain=True),
    "plain34": partial(ImageNetResNet, 34, plain=True),
}


def build(name: str, **kwargs: Any) -> ResNet:
    """The network named as in the paper, e.g. "resnet110", "plain56" or "resnet50".

    CIFAR: resnet/plain 20, 32, 44, 56, 110, 1202. ImageNet: resnet 18, 34, 50, 101, 152 and
    plain 18, 34. `kwargs` go to the constructor (e.g. shortcut="B", num_classes=100).
    """
    if name not in MODELS:
        raise ValueError(f"name: {name!r} is not one of {list(MODELS)}")
    return MODELS[name](**kwargs)
