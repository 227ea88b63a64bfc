"""papers/resnet/model.py against He et al. 2015 (Tables 1 and 6) and torchvision's ResNets."""

from __future__ import annotations

import copy
import math
import pickle
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from common.metrics import count_macs, count_params
from papers.resnet.model import (
    BasicBlock,
    CifarResNet,
    ImageNetResNet,
    ShortcutA,
    build,
)

# Table 6 prints params in millions to this many digits; the exact counts are ours (option A).
TABLE_6_PARAMS = {20: "0.27", 32: "0.46", 44: "0.66", 56: "0.85", 110: "1.7", 1202: "19.4"}
EXACT_PARAMS = {
    20: 269_722,
    32: 464_154,
    44: 658_586,
    56: 853_018,
    110: 1_727_962,
    1202: 19_421_274,
}
TABLE_1_MACS = {18: 1.8e9, 34: 3.6e9, 50: 3.8e9, 101: 7.6e9, 152: 11.3e9}


def manual_branch(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    """F(x) = BN(conv(ReLU(BN(conv(x))))), written out independently of the model."""
    return block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))


@pytest.mark.parametrize("depth", EXACT_PARAMS)
def test_cifar_params_match_table_6(depth: int) -> None:
    params = count_params(CifarResNet(depth))
    printed = TABLE_6_PARAMS[depth]
    decimals = len(printed.split(".")[1])
    assert f"{params / 1e6:.{decimals}f}" == printed
    assert params == EXACT_PARAMS[depth]


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_option_a_adds_no_params_and_projections_do(depth: int) -> None:
    plain = count_params(CifarResNet(depth, plain=True))
    option_a = count_params(CifarResNet(depth, shortcut="A"))
    option_b = count_params(CifarResNet(depth, shortcut="B"))
    option_c = count_params(CifarResNet(depth, shortcut="C"))
    assert option_a == plain
    # B projects only at the two width increases: 1x1 conv + BN, 16→32 and 32→64.
    assert option_b - option_a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert option_c > option_b


def test_stage_structure() -> None:
    model = CifarResNet(56)
    assert len(model.stages) == 3
    assert [len(stage) for stage in model.stages] == [9, 9, 9]
    assert len(model.blocks) == 27
    assert model.blocks == [block for stage in model.stages for block in stage]
    assert [stage[-1].out_channels for stage in model.stages] == [16, 32, 64]
    strides = [block.conv1.stride[0] for block in model.blocks]
    assert strides == [1] * 9 + [2] + [1] * 8 + [2] + [1] * 8


def test_shortcut_options_place_projections() -> None:
    def kinds(shortcut: str, plain: bool = False) -> list[str]:
        model = CifarResNet(20, shortcut=shortcut, plain=plain)
        return [type(block.shortcut).__name__ for block in model.blocks]

    identity, a, proj = "Identity", "ShortcutA", "Sequential"
    assert kinds("A") == [identity] * 3 + [a] + [identity] * 2 + [a] + [identity] * 2
    assert kinds("B") == [identity] * 3 + [proj] + [identity] * 2 + [proj] + [identity] * 2
    assert kinds("C") == [proj] * 9
    assert kinds("A", plain=True) == ["NoneType"] * 9


def test_shortcut_a_subsamples_and_zero_pads() -> None:
    x = torch.randn(2, 16, 8, 8)
    y = ShortcutA(16, 32, stride=2)(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert not y[:, 16:].any()


@pytest.mark.parametrize("plain", [False, True])
def test_block_is_post_activation(plain: bool) -> None:
    torch.manual_seed(0)
    shortcut = None if plain else ShortcutA(16, 32, stride=2)
    block = BasicBlock(16, 32, stride=2, shortcut=shortcut).eval()
    x = torch.randn(2, 16, 8, 8)
    expected = manual_branch(block, x)
    if not plain:
        expected = expected + F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, 16))
    torch.testing.assert_close(block(x), F.relu(expected))


def test_he_init() -> None:
    model = CifarResNet(110)
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.weight.numel() >= 2304:
            fan_out = module.out_channels * math.prod(module.kernel_size)
            assert module.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.1)


@pytest.mark.parametrize(
    ("shortcut", "plain"), [("A", False), ("B", False), ("C", False), ("A", True)]
)
@pytest.mark.parametrize(("in_channels", "size"), [(3, 32), (1, 28)])
def test_forward_shape(shortcut: str, plain: bool, in_channels: int, size: int) -> None:
    model = CifarResNet(20, shortcut=shortcut, plain=plain, in_channels=in_channels)
    out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("depth", [21, 2, 0])
def test_bad_depth(depth: int) -> None:
    message = f"depth: {depth} is not of the form 6n+2 (20, 32, 44, 56, 110, 1202, ...)"
    with pytest.raises(ValueError, match=re.escape(message)):
        CifarResNet(depth)


def test_bad_shortcut() -> None:
    with pytest.raises(ValueError, match=r"shortcut: 'D' is not one of \['A', 'B', 'C'\]"):
        CifarResNet(20, shortcut="D")


def test_bad_imagenet_arguments() -> None:
    with pytest.raises(ValueError, match=r"depth: 20 is not one of \[18, 34, 50, 101, 152\]"):
        ImageNetResNet(20)
    with pytest.raises(ValueError, match="stride_in: 'v2' is not one of"):
        ImageNetResNet(50, stride_in="v2")


def test_build_by_name() -> None:
    assert count_params(build("resnet20")) == EXACT_PARAMS[20]
    plain = build("plain56", num_classes=100)
    assert all(block.shortcut is None for block in plain.blocks)
    assert plain.fc.out_features == 100
    assert isinstance(build("resnet18"), ImageNetResNet)
    names = r"name: 'resnet21' is not one of \['resnet20'.*'resnet152'"
    with pytest.raises(ValueError, match=names):
        build("resnet21")


# Multiply-adds and state-dict keys depend on shapes only: the meta device skips memory and init.
@pytest.mark.parametrize("depth", TABLE_1_MACS)
def test_imagenet_matches_table_1_and_loads_torchvision(depth: int) -> None:
    with torch.device("meta"):
        ours = ImageNetResNet(depth, stride_in="paper")
        macs = count_macs(ours, (1, 3, 224, 224))
        theirs = getattr(torchvision.models, f"resnet{depth}")()
    assert macs == pytest.approx(TABLE_1_MACS[depth], rel=0.03)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert count_params(ours) == count_params(theirs)


def test_torchvision_placement_costs_4_1_gmacs() -> None:
    # ResNeXt (Xie et al. 2017) quotes 4.1 GFLOPs for the v1.5 ResNet-50 torchvision ships.
    with torch.device("meta"):
        macs = count_macs(ImageNetResNet(50, stride_in="torchvision"), (1, 3, 224, 224))
    assert macs == pytest.approx(4.1e9, rel=0.01)


@pytest.mark.parametrize("depth", [18, 50])
def test_outputs_equal_torchvision(depth: int) -> None:
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, f"resnet{depth}")().eval()
    ours = ImageNetResNet(depth, stride_in="torchvision").eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_picklable() -> None:
    model = CifarResNet(20).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
            torch.testing.assert_close(clone(x), expected)
