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
    Bottleneck,
    CifarResNet,
    ImageNetResNet,
    ZeroPadShortcut,
    make_shortcut,
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

    identity, a, proj = "Identity", "ZeroPadShortcut", "Sequential"
    assert kinds("A") == [identity] * 3 + [a] + [identity] * 2 + [a] + [identity] * 2
    assert kinds("B") == [identity] * 3 + [proj] + [identity] * 2 + [proj] + [identity] * 2
    assert kinds("C") == [proj] * 9
    assert kinds("A", plain=True) == ["NoneType"] * 9


@pytest.mark.parametrize("size", [8, 7])
def test_shortcut_a_subsamples_and_zero_pads(size: int) -> None:
    x = torch.randn(2, 16, size, size)
    sliced = ZeroPadShortcut(16, 32, stride=2)(x)
    pooled = ZeroPadShortcut(16, 32, stride=2, subsample="avg_pool")(x)
    assert sliced.shape == pooled.shape == (2, 32, 4, 4)
    torch.testing.assert_close(sliced[:, :16], x[:, :, ::2, ::2])
    torch.testing.assert_close(pooled[:, :16], F.avg_pool2d(x, 2, ceil_mode=True))
    assert not sliced[:, 16:].any() and not pooled[:, 16:].any()


@pytest.mark.parametrize("plain", [False, True])
def test_block_is_post_activation(plain: bool) -> None:
    torch.manual_seed(0)
    shortcut = None if plain else ZeroPadShortcut(16, 32, stride=2)
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


def test_plain_net_with_other_classes() -> None:
    plain = CifarResNet(56, plain=True, num_classes=100)
    assert all(block.shortcut is None for block in plain.blocks)
    assert plain.fc.out_features == 100


def test_bad_order_and_subsample() -> None:
    with pytest.raises(ValueError, match=r"order: 'mid' is not one of \['post', 'pre'\]"):
        CifarResNet(20, order="mid")
    with pytest.raises(ValueError, match=r"subsample: 'max' is not one of \['slice', 'avg_pool'\]"):
        ZeroPadShortcut(16, 32, 2, subsample="max")


def randomize_bn(model: nn.Module) -> None:
    """Eval-mode BN with non-trivial statistics and affine parameters, so each BN shows."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)


def bn(module: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """Eval BN written out: γ (x − μ) / sqrt(σ² + ε) + β, per channel."""

    def per_channel(t: torch.Tensor) -> torch.Tensor:
        return t[None, :, None, None]

    scale = per_channel(module.weight / torch.sqrt(module.running_var + module.eps))
    return (x - per_channel(module.running_mean)) * scale + per_channel(module.bias)


def conv(weight: torch.Tensor, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    return F.conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2)


@torch.no_grad()
def test_pre_activation_block_follows_its_equation() -> None:
    # He et al. 2016: y = x + F(x), F = conv(ReLU(BN(conv(ReLU(BN(x)))))), on a 1x2x3x3 input.
    torch.manual_seed(0)
    block = BasicBlock(2, 2, order="pre", shortcut=nn.Identity()).eval()
    randomize_bn(block)
    x = torch.arange(18.0).reshape(1, 2, 3, 3) / 9 - 1
    w1, w2 = block.conv1.weight, block.conv2.weight
    branch = conv(w2, F.relu(bn(block.bn2, conv(w1, F.relu(bn(block.bn1, x))))))
    torch.testing.assert_close(block(x), x + branch)
    assert block.bn1.num_features == 2 and block.bn2.num_features == 2


@torch.no_grad()
def test_pre_activation_shortcut_takes_the_activated_input() -> None:
    # A shortcut that changes the shape shares the block's first BN-ReLU with the branch.
    torch.manual_seed(0)
    shortcut = make_shortcut("B", 2, 4, stride=2, order="pre")
    assert isinstance(shortcut, nn.Conv2d)  # pre order: a bare 1x1 projection, no BN
    block = BasicBlock(2, 4, stride=2, order="pre", shortcut=shortcut).eval()
    randomize_bn(block)
    x = torch.randn(1, 2, 5, 5)
    activated = F.relu(bn(block.bn1, x))
    branch = conv(block.conv2.weight, F.relu(bn(block.bn2, conv(block.conv1.weight, activated, 2))))
    torch.testing.assert_close(block(x), conv(shortcut.weight, activated, 2) + branch)


@torch.no_grad()
def test_pre_activation_network() -> None:
    # conv1 → BN → ReLU is the first unit's activation, so that unit has no BN-ReLU of its own;
    # a BN-ReLU follows the last addition.
    torch.manual_seed(0)
    model = CifarResNet(20, order="pre").eval()
    randomize_bn(model)
    first, *rest = model.blocks
    assert first.bn1 is None and all(b.bn1.num_features == b.conv1.in_channels for b in rest)
    x = torch.randn(2, 3, 16, 16)
    h = F.relu(bn(model.bn1, conv(model.conv1.weight, x)))
    h = first.conv2(F.relu(first.bn2(first.conv1(h)))) + h
    for block in rest:
        h = block(h)
    h = F.relu(bn(model.final_bn, h)).mean((2, 3))
    torch.testing.assert_close(model(x), model.fc(h))
    # Pre-order projections are bare convs: B adds only the two 1x1 convs over A.
    option_b = count_params(CifarResNet(20, shortcut="B", order="pre"))
    assert option_b - count_params(model) == 16 * 32 + 32 * 64


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_pre_activation_blocks_train(block: type) -> None:
    width = 4 * block.expansion
    model = nn.Sequential(
        block(4, 4, stride=2, order="pre", shortcut=make_shortcut("A", 4, width, 2)),
        block(width, 4, order="pre", shortcut=nn.Identity()),
    )
    out = model(torch.randn(2, 4, 6, 6))
    assert out.shape == (2, 4 * block.expansion, 3, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


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
