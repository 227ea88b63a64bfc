"""papers/wrn/model.py against Zagoruyko & Komodakis 2016: the networks' parameters and
multiply-adds (Tables 2, 5, 6), torchvision's wide_resnet50_2, the unit against papers/
preact_resnet's, dropout, and the one-line errors."""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from torch import nn

from common.config import ConfigError, build_model
from common.metrics import count_macs, count_params
from papers.preact_resnet.model import BasicUnit
from papers.resnet.model import make_shortcut
from papers.wrn.model import BLOCK_TYPES, ImageNetWideResNet, WideResNet, WideUnit
from tests.test_resnet_model import randomize_bn

# (depth, k, block type): parameters and multiply-adds at 1x3x32x32, 10 classes.
EXACT = {
    (40, 4, "B(3,3)"): (8_949_210, 1_298_582_016),
    (16, 8, "B(3,3)"): (10_961_370, 1_548_145_664),
    (28, 10, "B(3,3)"): (36_479_194, 5_243_328_768),
    (16, 4, "B(3,3)"): (2_748_890, 392_612_352),
    (52, 1, "B(3,3)"): (758_362, 111_592_064),
    (28, 2, "B(3,3)"): (1_467_610, 214_353_152),
    (40, 2, "B(1,3,1)"): (1_429_082, 208_061_696),
    (40, 2, "B(3,1)"): (1_211_354, 176_604_416),
    (40, 2, "B(1,3)"): (1_297_370, 189_187_328),
    (40, 2, "B(3,1,1)"): (1_343_066, 195_478_784),
    (22, 2, "B(3,1,3)"): (1_145_498, 167_167_232),
}
PAPER_MILLIONS = {(40, 4): "8.9", (16, 8): "11.0", (28, 10): "36.5", (28, 2): "1.5"}  # Tables 2, 5


@functools.cache
def on_meta(depth: int, k: int, block_type: str = "B(3,3)") -> WideResNet:
    """The network on the meta device: counts depend on shapes only."""
    with torch.device("meta"):
        return WideResNet(depth, k, block_type)


@pytest.mark.parametrize(("depth", "k", "block_type"), EXACT)
def test_params_and_macs(depth: int, k: int, block_type: str) -> None:
    model = on_meta(depth, k, block_type)
    with torch.device("meta"):
        counted = count_params(model), count_macs(model, (1, 3, 32, 32))
    assert counted == EXACT[depth, k, block_type]
    if block_type == "B(3,3)" and (depth, k) in PAPER_MILLIONS:
        assert f"{counted[0] / 1e6:.1f}" == PAPER_MILLIONS[depth, k]


def test_layout_of_wrn_28_10() -> None:
    model = on_meta(28, 10)
    assert [len(stage) for stage in model.stages] == [4, 4, 4]
    assert [stage[0].out_channels for stage in model.stages] == [160, 320, 640]
    # A 1x1 projection where the width or the resolution changes, the identity elsewhere.
    projections = [not isinstance(b.shortcut, nn.Identity) for b in model.blocks]
    assert projections == [True, False, False, False] * 3
    assert model.final_bn is not None  # BN-ReLU after the last addition


@pytest.mark.parametrize("block_type", BLOCK_TYPES)
def test_block_types_list_their_kernels_and_stride_in_the_first_conv(block_type: str) -> None:
    unit = WideUnit(16, 32, 2, block_type=block_type)
    kernels = [conv.kernel_size[0] for conv, _ in unit.layers()]
    assert f"B({','.join(map(str, kernels))})" == block_type
    assert [conv.stride[0] for conv, _ in unit.layers()] == [2] + [1] * (len(kernels) - 1)
    assert {conv.out_channels for conv, _ in unit.layers()} == {32}


@pytest.mark.parametrize(("in_channels", "width", "stride"), [(32, 32, 1), (16, 32, 2)])
def test_unit_is_preact_resnets_full_preactivation_unit(
    in_channels: int, width: int, stride: int
) -> None:
    torch.manual_seed(0)
    shortcut = make_shortcut("B", in_channels, width, stride, order="pre")
    theirs = BasicUnit(in_channels, width, stride, shortcut, order="pre", unit="full_preact")
    ours = WideUnit(in_channels, width, stride, make_shortcut("B", in_channels, width, stride,
                                                            order="pre"))  # fmt: skip
    randomize_bn(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(4, in_channels, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))


def test_dropout_acts_only_in_training() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    model = WideResNet(10, 2, dropout=0.3)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))  # a fresh mask on each pass
        model.eval()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        without = WideResNet(10, 2, dropout=0.0)
        without.load_state_dict(model.state_dict())
        torch.testing.assert_close(without.eval()(x), model(x), rtol=0, atol=0)
        without.train()
        torch.testing.assert_close(without(x), without(x), rtol=0, atol=0)


def test_dropout_sits_between_the_convs() -> None:
    torch.manual_seed(0)
    unit = WideUnit(8, 8, dropout=0.5).train()
    randomize_bn(unit)
    a = torch.randn(4, 8, 6, 6)
    torch.manual_seed(1)
    ours = unit.residual(a)
    torch.manual_seed(1)
    h = torch.nn.functional.dropout(torch.relu(unit.bn2(unit.conv1(a))), 0.5, training=True)
    torch.testing.assert_close(ours, unit.conv2(h))


def test_wrn_50_2_is_torchvisions_wide_resnet50_2() -> None:
    with torch.device("meta"):
        ours, theirs = ImageNetWideResNet(50, 2), torchvision.models.wide_resnet50_2()
        macs = count_macs(ours, (1, 3, 224, 224))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert count_params(ours) == count_params(theirs) == 68_883_240  # paper: 68.9M
    assert macs == 11_398_021_120


def test_wrn_50_2_outputs_equal_torchvision() -> None:
    torch.manual_seed(0)
    theirs = torchvision.models.wide_resnet50_2().eval()
    ours = ImageNetWideResNet(50, 2).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"depth": 27}, "depth: 27 is not of the form 6N+4 (10, 16, 22, 28, 40, ...)"),
        ({"depth": 4}, "depth: 4 is not of the form 6N+4 (10, 16, 22, 28, 40, ...)"),
        ({"depth": 16, "k": 0}, "k: 0 must be a widening factor >= 1"),
        ({"depth": 16, "dropout": 1.0}, "dropout: 1.0 must be in [0, 1)"),
        ({"depth": 16, "dropout": -0.1}, "dropout: -0.1 must be in [0, 1)"),
        ({"depth": 16, "block_type": "B(3,3,3)"}, "block_type: 'B(3,3,3)' is not one of"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: dict, message: str) -> None:
    spec = {"class_path": "papers.wrn.model.WideResNet", **args}
    with pytest.raises(ConfigError) as err:
        build_model(spec, in_channels=1, num_classes=10)
    assert str(err.value).startswith(f"model: {message}")
    assert "\n" not in str(err.value)


def test_imagenet_depth_and_k_are_checked() -> None:
    with pytest.raises(ValueError, match=r"depth: 34 is not one of \[50, 101, 152\]"):
        ImageNetWideResNet(34)
    with pytest.raises(ValueError, match="k: 0 must be a widening factor >= 1"):
        ImageNetWideResNet(50, 0)
