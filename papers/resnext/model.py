"""Aggregated Residual Transformations for Deep Neural Networks — Xie, Girshick, Dollár, Tu, He
2017 (arXiv 1611.05431).

A ResNeXt block aggregates C transformations of the same topology (the cardinality C) and adds its
input back, post-activation as in He et al. 2015 (papers/resnet):

    y = x + Σ_{i=1}^{C} T_i(x)                                                            (Eq. 3)

each T_i a bottleneck path 1x1 (d channels) → 3x3 (d) → its share of a 1x1 back to the output
width. Fig. 3 gives three equal forms: (a) C separate paths summed, (b) their 3x3 outputs
concatenated before one 1x1, (c) one block whose 3x3 is a grouped conv with C groups,
1x1 (D) → 3x3 (D, C groups) → 1x1 (4·width), D = C·d at the first stage, doubling per stage with
the width. This file builds (c), papers/resnet's bottleneck with its 3x3 grouped
(tests/test_resnext_model.py holds it equal to (a) and (b)): BN after each conv, ReLU after each
of the first two BNs and after the addition, the stride in the 3x3 (the paper's implementation).

ImageNet ResNeXt-50/101/152 (Table 1): ResNet-50/101/152's layout (7x7/2 conv 64, 3x3/2 max pool,
four stages of outputs 256/512/1024/2048, option B projections) with these blocks, and
torchvision's module names, so its resnext50_32x4d and resnext101_64x4d weights load unchanged.
CIFAR ResNeXt-29 (Sec. 5.3): a 3x3 conv of 64 filters, three stages × 3 blocks of outputs
256/512/1024 at 32/16/8 px, global average pooling, FC; depth = 9n+2. Parameters and
multiply-adds with 3 input channels, 1000 classes on ImageNet and 10 on CIFAR (ours, to the
integer: tests/test_resnext_model.py), against the counts the paper prints:

    network               params (ours)   MACs (ours)            paper
    ResNeXt-50, 32x4d      25,028,904      4.23G at 224x224      25.0M, 4.2G  (Table 1)
    ResNeXt-101, 32x4d     44,177,704      7.97G at 224x224
    ResNeXt-101, 64x4d     83,455,272     15.46G at 224x224
    ResNeXt-29, 8x64d      34,426,698      5.39G at 32x32        34.4M        (Table 7)
    ResNeXt-29, 16x64d     68,155,210     10.69G at 32x32        68.1M        (Table 7)

ResNeXt-50 and ResNeXt-101 64x4d are torchvision's to the integer. The 44.3M and 83.7M sometimes
quoted for ResNeXt-101 are not what this layout gives (0.3% more).

Table 3's templates (`TEMPLATES`, C x d) keep ResNet-50's complexity at the block level (Table 2:
~70k conv weights in a conv2 block; ours 69,632 to 71,456). Over the whole network they stay
within 2.1% of ResNet-50's 25,557,032 parameters but not of its 4.09G multiply-adds (up to +4.4%,
8x14d): a larger D makes the 1x1s costlier, and the first 1x1 of a stage runs before the stride.
The paper's own Table 1 shows the same drift (25.5M, 4.1G → 25.0M, 4.2G). 1x64d is ResNet-50
itself, with the stride in the 3x3 (torchvision's).
"""

from __future__ import annotations

from functools import partial

from torch import nn

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

TEMPLATES = {  # Table 3: (cardinality C, bottleneck width d) at ResNet-50's complexity
    "1x64d": (1, 64),
    "2x40d": (2, 40),
    "4x24d": (4, 24),
    "8x14d": (8, 14),
    "32x4d": (32, 4),
}
CIFAR_STAGE_SCALES = (1, 2, 4)  # stage widths as multiples of base_width (Sec. 5.3)


def at_least_one(name: str, value: int) -> None:
    """Raise a ValueError naming the argument unless `value` >= 1."""
    if value < 1:
        raise ValueError(f"{name}: {value} must be >= 1")


def grouped_conv3x3(in_channels: int, out_channels: int, groups: int, stride: int = 1) -> nn.Conv2d:
    """The C paths' 3x3 convs as one conv of C groups (Fig. 3c); no bias, BN follows."""
    at_least_one("cardinality", groups)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"cardinality: {groups} must divide the 3x3's width ({in_channels} → {out_channels})"
        )
    return nn.Conv2d(
        in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False
    )


def bottleneck_channels(
    width: int, cardinality: int, bottleneck_width: int, base_width: int
) -> int:
    """D = C · d · width / base_width: d channels per path at the first stage, doubling with the
    width. Floored per path (torchvision's int(width · d / 64) · C), so C always divides D."""
    return cardinality * (bottleneck_width * width // base_width)


class GroupedBottleneck(ResidualBlock):
    """A ResNeXt block (Fig. 3c): 1x1 (D) → grouped 3x3 (D, `cardinality` groups, the stride) →
    1x1 (4·width), post order: y = ReLU(Σ_i T_i(x) + shortcut(x)).

    `width` is the stage's base width (64/128/256/512 on ImageNet); `base_width` the first stage's,
    where each path has `bottleneck_width` channels.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        shortcut: nn.Module | None = None,
        *,
        cardinality: int = 32,
        bottleneck_width: int = 4,
        base_width: int = 64,
    ) -> None:
        at_least_one("cardinality", cardinality)
        at_least_one("bottleneck_width", bottleneck_width)
        at_least_one("base_width", base_width)
        inner = bottleneck_channels(width, cardinality, bottleneck_width, base_width)
        if inner < 1:  # a later stage is never narrower, so only width < base_width gets here
            raise ValueError(f"width: {width} leaves no channel per path (base_width {base_width})")
        convs = [
            conv1x1(in_channels, inner),
            grouped_conv3x3(inner, inner, cardinality, stride),
            conv1x1(inner, width * self.expansion),
        ]
        super().__init__(convs, shortcut)
        self.cardinality, self.bottleneck_width = cardinality, bottleneck_width

    def extra_repr(self) -> str:
        return f"cardinality={self.cardinality}, bottleneck_width={self.bottleneck_width}"


class ImageNetResNeXt(ResNet):
    """ImageNet ResNeXt-50/101/152, C x d (Table 1, Table 5): ResNet's layout (option B) with
    grouped bottlenecks; torchvision's names, so `resnext50_32x4d` loads with strict=True.

    Args:
        depth: 50, 101 or 152.
        cardinality: C, the number of paths (32 in Table 1).
        bottleneck_width: d, the channels of each path at the first stage (4 in Table 1).
        in_channels: input channels.
        num_classes: outputs of the final FC.
    """

    def __init__(
        self,
        depth: int = 50,
        cardinality: int = 32,
        bottleneck_width: int = 4,
        in_channels: int = 3,
        num_classes: int = 1000,
    ) -> None:
        one_of("depth", depth, [d for d in IMAGENET_REPEATS if d >= 50])
        expansion = GroupedBottleneck.expansion
        specs = stage_specs(IMAGENET_WIDTHS[0], IMAGENET_WIDTHS, IMAGENET_REPEATS[depth], expansion)
        block = partial(
            GroupedBottleneck,
            cardinality=cardinality,
            bottleneck_width=bottleneck_width,
            base_width=IMAGENET_WIDTHS[0],
        )
        stages = build_stages(specs, block, "B")
        conv1 = nn.Conv2d(in_channels, IMAGENET_WIDTHS[0], 7, stride=2, padding=3, bias=False)
        super().__init__(conv1, stages, num_classes, maxpool=True)


def blocks_per_stage(depth: int) -> int:
    """n of ResNeXt-(9n+2): 3 stages × n blocks × 3 layers + the first conv + the FC."""
    if depth < 11 or (depth - 2) % 9:
        raise ValueError(f"depth: {depth} is not of the form 9n+2 (11, 20, 29, ...)")
    return (depth - 2) // 9


class CifarResNeXt(ResNet):
    """CIFAR ResNeXt-29, C x d (Sec. 5.3, Table 7): a 3x3 conv of `base_width` filters, then three
    stages × n grouped bottlenecks of outputs 4·base_width·(1, 2, 4) (256/512/1024 in the paper),
    option B (stage 1's first block projects base_width → 4·base_width), pooling, FC.

    Args:
        depth: 9n+2 (29 in the paper: n = 3).
        cardinality: C (8 or 16 in Table 7).
        bottleneck_width: d, the channels of each path at the first stage (64 in Table 7).
        base_width: the first conv's filters and the first stage's width (64 in the paper;
            smaller for a CPU profile).
        in_channels: 3 for CIFAR, 1 for (Fashion-)MNIST at 28x28.
        num_classes: outputs of the final FC.
    """

    def __init__(
        self,
        depth: int = 29,
        cardinality: int = 8,
        bottleneck_width: int = 64,
        base_width: int = 64,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        n = blocks_per_stage(depth)
        at_least_one("base_width", base_width)
        widths = [base_width * scale for scale in CIFAR_STAGE_SCALES]
        specs = stage_specs(base_width, widths, [n] * 3, GroupedBottleneck.expansion)
        block = partial(
            GroupedBottleneck,
            cardinality=cardinality,
            bottleneck_width=bottleneck_width,
            base_width=base_width,
        )
        stages = build_stages(specs, block, "B")
        super().__init__(conv3x3(in_channels, base_width), stages, num_classes)
