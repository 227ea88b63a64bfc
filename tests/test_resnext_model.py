"""papers/resnext/model.py against Xie et al. 2017: parameters and multiply-adds (Tables 1, 7),
Table 3's templates against ResNet-50, torchvision's resnext50_32x4d, the three equal forms of
Fig. 3 (Eq. 3 as a grouped conv), the layout, and the one-line errors."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from common.config import ConfigError, build_model
from common.metrics import count_macs, count_params
from papers.resnet.model import ImageNetResNet, projection
from papers.resnext.model import (
    TEMPLATES,
    CifarResNeXt,
    GroupedBottleneck,
    ImageNetResNeXt,
    grouped_conv3x3,
)
from tests.test_resnet_model import randomize_bn

# Parameters and multiply-adds, ours to the integer: ImageNet at 1x3x224x224 with 1000 classes,
# CIFAR at 1x3x32x32 with 10.
IMAGENET = {  # (depth, C, d)
    (50, 32, 4): (25_028_904, 4_230_479_872),
    (101, 32, 4): (44_177_704, 7_969_996_800),
    (101, 64, 4): (83_455_272, 15_460_270_080),
}
CIFAR = {  # (depth, C, d)
    (29, 8, 64): (34_426_698, 5_387_266_048),
    (29, 16, 64): (68_155_210, 10_688_866_304),
}
# What the paper prints (params in M, MACs in G, "FLOPs" there); ours is within one unit of the
# last printed digit (the paper truncates parameters: ResNet-50's 25,557,032 is its "25.5M").
PRINTED = {
    (50, 32, 4): (25.0, 4.2),  # Table 1
    (29, 8, 64): (34.4, None),  # Table 7
    (29, 16, 64): (68.1, None),  # Table 7
}
TORCHVISION = {(50, 32, 4): "resnext50_32x4d", (101, 64, 4): "resnext101_64x4d"}
RESNET_50 = (25_557_032, 4_089_184_256)  # torchvision's, the stride in the 3x3
TEMPLATE_COUNTS = {  # Table 3: ResNeXt-50 (C x d), params and MACs at 224x224
    "1x64d": RESNET_50,
    "2x40d": (25_425_000, 4_124_508_160),
    "4x24d": (25_292_968, 4_159_832_064),
    "8x14d": (25_603_016, 4_267_409_408),
    "32x4d": (25_028_904, 4_230_479_872),
}
BLOCK_WEIGHTS = {
    "1x64d": 69_632,
    "2x40d": 69_760,
    "4x24d": 69_888,
    "8x14d": 71_456,
    "32x4d": 70_144,
}


def on_meta(build: Callable[[], nn.Module], shape: tuple[int, ...]) -> tuple[nn.Module, int, int]:
    """The network on the meta device (counts depend on shapes only), its params and MACs."""
    with torch.device("meta"):
        model = build()
        return model, count_params(model), count_macs(model, shape)


@functools.cache
def imagenet(depth: int, cardinality: int, bottleneck_width: int) -> tuple[nn.Module, int, int]:
    return on_meta(lambda: ImageNetResNeXt(depth, cardinality, bottleneck_width), (1, 3, 224, 224))


@functools.cache
def resnet_50() -> tuple[nn.Module, int, int]:
    return on_meta(lambda: ImageNetResNet(50, stride_in="torchvision"), (1, 3, 224, 224))


def assert_printed(key: tuple[int, int, int], params: int, macs: int) -> None:
    printed_params, printed_macs = PRINTED[key]
    assert abs(params / 1e6 - printed_params) < 0.1
    if printed_macs is not None:
        assert abs(macs / 1e9 - printed_macs) < 0.1


@pytest.mark.parametrize("key", IMAGENET)
def test_imagenet_params_and_macs(key: tuple[int, int, int]) -> None:
    model, params, macs = imagenet(*key)
    assert (params, macs) == IMAGENET[key]
    if key in PRINTED:
        assert_printed(key, params, macs)
    if key in TORCHVISION:
        with torch.device("meta"):
            theirs = getattr(torchvision.models, TORCHVISION[key])()
        assert count_params(theirs) == params
        model.load_state_dict(theirs.state_dict(), strict=True)


@pytest.mark.parametrize("key", CIFAR)
def test_cifar_params_and_macs(key: tuple[int, int, int]) -> None:
    _, params, macs = on_meta(lambda: CifarResNeXt(*key), (1, 3, 32, 32))
    assert (params, macs) == CIFAR[key]
    assert_printed(key, params, macs)


@pytest.mark.parametrize("template", TEMPLATES)
def test_table_3_templates_keep_resnet_50_complexity(template: str) -> None:
    cardinality, bottleneck_width = TEMPLATES[template]
    _, params, macs = imagenet(50, cardinality, bottleneck_width)
    assert (params, macs) == TEMPLATE_COUNTS[template]
    # Table 2 preserves a conv2 block's ~70k weights; the whole network keeps the parameters
    # within 2.1%, the MACs within 4.4% (the paper's Table 1: 25.5M, 4.1G → 25.0M, 4.2G).
    block = GroupedBottleneck(256, 64, cardinality=cardinality, bottleneck_width=bottleneck_width)
    weights = sum(conv.weight.numel() for conv, _ in block.layers())
    assert weights == BLOCK_WEIGHTS[template]
    assert abs(weights / 70_000 - 1) < 0.03
    assert abs(params / RESNET_50[0] - 1) < 0.021
    assert abs(macs / RESNET_50[1] - 1) < 0.045


def test_1x64d_is_resnet_50() -> None:
    resnet, params, macs = resnet_50()
    ours, our_params, our_macs = imagenet(50, 1, 64)
    assert (our_params, our_macs) == (params, macs) == RESNET_50
    ours.load_state_dict(resnet.state_dict(), strict=True)
    torch.manual_seed(0)
    resnet, ours = ImageNetResNet(50, stride_in="torchvision").eval(), ImageNetResNeXt(50, 1, 64)
    randomize_bn(resnet)
    ours.eval().load_state_dict(resnet.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), resnet(x))


def test_resnext_50_outputs_equal_torchvision() -> None:
    torch.manual_seed(0)
    theirs = torchvision.models.resnext50_32x4d(weights=None).eval()
    randomize_bn(theirs)
    ours = ImageNetResNeXt(50, 32, 4).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def bn_of(bn: nn.BatchNorm2d, x: Tensor, channels: slice) -> Tensor:
    """Eval BN restricted to `channels` (a path's share of the block's BN)."""
    stats = (bn.running_mean[channels], bn.running_var[channels])
    return F.batch_norm(x, *stats, bn.weight[channels], bn.bias[channels], False, 0.0, bn.eps)


def paths(block: GroupedBottleneck, x: Tensor) -> list[tuple[Tensor, slice]]:
    """Each path T_i up to its 3x3: 1x1 → BN → ReLU → 3x3 → BN → ReLU, from the block's weights
    sliced to the path (the grouped 3x3's i-th group), with the path's channels."""
    d = block.conv2.out_channels // block.cardinality
    out = []
    for i in range(block.cardinality):
        s = slice(i * d, (i + 1) * d)
        h = F.relu(bn_of(block.bn1, F.conv2d(x, block.conv1.weight[s]), s))
        h = F.conv2d(h, block.conv2.weight[s], stride=block.conv2.stride, padding=1)
        out.append((F.relu(bn_of(block.bn2, h, s)), s))
    return out


def form_a(block: GroupedBottleneck, x: Tensor) -> Tensor:
    """Fig. 3a: each path ends in its slice of the last 1x1; the C outputs summed (Eq. 3)."""
    total = sum(F.conv2d(h, block.conv3.weight[:, s]) for h, s in paths(block, x))
    return F.relu(block.bn3(total) + block.shortcut(x))


def form_b(block: GroupedBottleneck, x: Tensor) -> Tensor:
    """Fig. 3b: the paths' 3x3 outputs concatenated, then one 1x1."""
    concatenated = torch.cat([h for h, _ in paths(block, x)], dim=1)
    return F.relu(block.bn3(block.conv3(concatenated)) + block.shortcut(x))


@pytest.mark.parametrize(("in_channels", "stride"), [(32, 1), (16, 2)])
def test_fig_3_forms_are_equal(in_channels: int, stride: int) -> None:
    torch.manual_seed(0)
    shortcut = nn.Identity() if stride == 1 else projection(in_channels, 32, stride)
    block = GroupedBottleneck(
        in_channels, 8, stride, shortcut, cardinality=4, bottleneck_width=2, base_width=8
    )
    assert (block.conv2.groups, block.conv2.out_channels) == (4, 8)  # C = 4 paths of d = 2
    randomize_bn(block)
    block = block.double().eval()
    x = torch.randn(2, in_channels, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        grouped = block(x)
        torch.testing.assert_close(form_a(block, x), grouped)
        torch.testing.assert_close(form_b(block, x), grouped)
        side = (9 - 1) // stride + 1
        assert grouped.shape == (2, 32, side, side)


def stage_shapes(model: nn.Module, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The output shape of each stage on an input of `shape`, on the model's device (the meta
    device computes shapes only)."""
    shapes: list[tuple[int, ...]] = []
    hooks = [
        stage.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
        for stage in model.stages
    ]
    model(torch.zeros(shape, device=next(model.parameters()).device))
    for hook in hooks:
        hook.remove()
    return shapes


def test_imagenet_layout() -> None:
    model, _, _ = imagenet(50, 32, 4)
    assert [len(stage) for stage in model.stages] == [3, 4, 6, 3]
    assert stage_shapes(model, (1, 3, 224, 224)) == [
        (1, 256, 56, 56),
        (1, 512, 28, 28),
        (1, 1024, 14, 14),
        (1, 2048, 7, 7),
    ]
    firsts = [stage[0] for stage in model.stages]
    assert [b.conv2.out_channels for b in firsts] == [128, 256, 512, 1024]  # D doubles
    assert [b.conv2.stride[0] for b in firsts] == [1, 2, 2, 2]  # the 3x3 carries the stride
    assert {(b.conv1.stride[0], b.conv3.stride[0]) for b in model.blocks} == {(1, 1)}
    assert {b.conv2.groups for b in model.blocks} == {32}
    projections = [not isinstance(b.shortcut, nn.Identity) for b in model.blocks]
    assert projections == [i in (0, 3, 7, 13) for i in range(16)]  # option B


def test_cifar_layout() -> None:
    model, _, _ = on_meta(lambda: CifarResNeXt(29, 8, 64), (1, 3, 32, 32))
    assert model.conv1.out_channels == 64 and model.conv1.kernel_size == (3, 3)
    assert [len(stage) for stage in model.stages] == [3, 3, 3]
    shapes = stage_shapes(model, (1, 3, 32, 32))
    assert shapes == [(1, 256, 32, 32), (1, 512, 16, 16), (1, 1024, 8, 8)]
    firsts = [stage[0] for stage in model.stages]
    assert [b.conv2.out_channels for b in firsts] == [512, 1024, 2048]  # D = C·d, doubling
    assert [b.conv2.stride[0] for b in firsts] == [1, 2, 2]
    assert {b.conv2.groups for b in model.blocks} == {8}
    # Stage 1's first block goes 64 → 256 at stride 1: it projects too.
    projections = [not isinstance(b.shortcut, nn.Identity) for b in model.blocks]
    assert projections == [True, False, False] * 3


def test_small_cifar_resnext_on_fashion_mnist() -> None:
    spec = {"class_path": "papers.resnext.model.CifarResNeXt", "base_width": 16}
    spec |= {"depth": 11, "cardinality": 4, "bottleneck_width": 4}
    model = build_model(spec, in_channels=1, num_classes=10)
    assert stage_shapes(model, (2, 1, 28, 28)) == [
        (2, 64, 28, 28),
        (2, 128, 14, 14),
        (2, 256, 7, 7),
    ]
    assert [stage[0].conv2.out_channels for stage in model.stages] == [16, 32, 64]
    torch.manual_seed(0)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_grouped_conv3x3() -> None:
    conv = grouped_conv3x3(16, 32, 4, stride=2)
    assert (conv.groups, conv.stride, conv.padding, conv.bias) == (4, (2, 2), (1, 1), None)
    assert conv.weight.shape == (32, 4, 3, 3)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: GroupedBottleneck(64, 64, cardinality=0), "cardinality: 0 must be >= 1"),
        (lambda: GroupedBottleneck(64, 64, bottleneck_width=0), "bottleneck_width: 0 must be >= 1"),
        (lambda: CifarResNeXt(cardinality=0), "cardinality: 0 must be >= 1"),
        (lambda: CifarResNeXt(base_width=0), "base_width: 0 must be >= 1"),
        (lambda: CifarResNeXt(30), "depth: 30 is not of the form 9n+2 (11, 20, 29, ...)"),
        (lambda: CifarResNeXt(2), "depth: 2 is not of the form 9n+2 (11, 20, 29, ...)"),
        (lambda: ImageNetResNeXt(34), "depth: 34 is not one of [50, 101, 152]"),
        (lambda: ImageNetResNeXt(50, bottleneck_width=0), "bottleneck_width: 0 must be >= 1"),
        (
            lambda: grouped_conv3x3(48, 48, 32),
            "cardinality: 32 must divide the 3x3's width (48 → 48)",
        ),
        (lambda: grouped_conv3x3(64, 0, 0), "cardinality: 0 must be >= 1"),
    ],
)
def test_bad_arguments_are_one_line_errors(build: Callable[[], nn.Module], message: str) -> None:
    with torch.device("meta"), pytest.raises(ValueError) as err:
        build()
    assert str(err.value) == message


def test_bad_arguments_through_the_config() -> None:
    spec = {"class_path": "papers.resnext.model.CifarResNeXt", "depth": 30}
    with pytest.raises(ConfigError) as err:
        build_model(spec, in_channels=1, num_classes=10)
    assert str(err.value).startswith("model: depth: 30 is not of the form 9n+2")
    assert "\n" not in str(err.value)
