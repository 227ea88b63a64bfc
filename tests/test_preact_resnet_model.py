"""papers/preact_resnet/model.py against He et al. 2016: each unit of Fig. 4 and each shortcut of
Fig. 2 against its equation, the networks' parameters (Table 4) and the official code's layout."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from common.config import ConfigError, build_model, resolve
from common.metrics import count_params
from papers.preact_resnet.model import (
    SHORTCUTS,
    UNITS,
    Addition,
    BasicUnit,
    BottleneckUnit,
    PreActResNet,
    bn_order,
)
from papers.resnet.model import ZeroPadShortcut, make_shortcut
from tests.test_resnet_model import bn, conv, randomize_bn

PARAMS = Path(__file__).resolve().parents[1] / "papers" / "preact_resnet" / "params.yaml"
# (depth, bottleneck, unit): parameters with 3 input channels and 10 classes. Table 4 prints 1.7M
# for ResNet-110 and 164 and 10.2M for ResNet-1001; KaimingHe/resnet-1k-layers' pre-act
# ResNet-164/1001 and bearpaw/pytorch-classification's preresnet (its "110" is n = 18 bottlenecks
# per stage: our 164) count the same as ours.
EXACT_PARAMS = {
    (110, False, "full_preact"): 1_727_962,
    (110, False, "original"): 1_727_962,
    (164, True, "full_preact"): 1_703_258,
    (164, True, "original"): 1_704_154,
    (1001, True, "full_preact"): 10_327_706,
    (1001, True, "original"): 10_328_602,
}


@functools.cache
def on_meta(depth: int, bottleneck: bool, unit: str = "full_preact") -> PreActResNet:
    """The network on the meta device: parameter counts depend on shapes only."""
    with torch.device("meta"):
        return PreActResNet(depth, unit, bottleneck)


@pytest.mark.parametrize(("depth", "bottleneck", "unit"), EXACT_PARAMS)
def test_params_match_table_4(depth: int, bottleneck: bool, unit: str) -> None:
    params = count_params(on_meta(depth, bottleneck, unit))
    assert params == EXACT_PARAMS[depth, bottleneck, unit]
    assert f"{params / 1e6:.1f}" == {110: "1.7", 164: "1.7", 1001: "10.3"}[depth]


def test_resnet_1001_without_bn_affine_is_the_papers_10_2m() -> None:
    model = on_meta(1001, True)
    bn_params = sum(
        p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()
    )
    assert count_params(model) - bn_params == 10_178_490  # 10.2M, as Table 4 prints


@pytest.mark.parametrize("unit", UNITS)
def test_every_unit_of_table_2_has_the_same_parameters(unit: str) -> None:
    # Moving BN and ReLU changes where they act, not what they hold (a full pre-act ResNet-164 has
    # one BN of 256 after the last addition instead of BNs of the expanded width in the units).
    assert count_params(on_meta(110, False, unit)) == 1_727_962


def test_official_layout_of_resnet_164() -> None:
    # resnet-pre-act.lua: conv 3x3 16; 3 stages × 18 bottlenecks [1x1 k, 3x3 k, 1x1 4k], k =
    # 16/32/64, stride in the first 1x1; a bare 1x1 projection (on the shared BN-ReLU) where the
    # dimension increases, identities elsewhere; BN-ReLU; average pooling; FC.
    model = PreActResNet(164, bottleneck=True)
    assert [len(stage) for stage in model.stages] == [18, 18, 18]
    for stage, (width, stride) in zip(model.stages, [(16, 1), (32, 2), (64, 2)], strict=True):
        first = stage[0]
        assert isinstance(first, BottleneckUnit)
        assert first.conv1.stride == (stride, stride) and first.conv2.stride == (1, 1)
        assert (first.conv1.out_channels, first.conv3.out_channels) == (width, 4 * width)
        assert isinstance(first.shortcut, nn.Conv2d) and first.shortcut.stride == (stride, stride)
        assert all(isinstance(unit.shortcut, nn.Identity) for unit in stage[1:])
    assert model.final_bn.num_features == 256 and model.fc.in_features == 256


@torch.no_grad()
def _with_random_bn(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    randomize_bn(module)
    return module.eval()


def _layers(unit: BasicUnit | BottleneckUnit) -> list[tuple[Tensor, nn.BatchNorm2d, int]]:
    """Each conv's weight, its BN and its stride, written out of the unit."""
    n = unit.num_convs
    convs = [getattr(unit, f"conv{i}") for i in range(1, n + 1)]
    bns = [getattr(unit, f"bn{i}") for i in range(1, n + 1)]
    return [(c.weight, b, c.stride[0]) for c, b in zip(convs, bns, strict=True)]


def equation(unit_name: str, unit: nn.Module, x: Tensor) -> Tensor:
    """x_{l+1} of Fig. 4 (a)-(e), with identity shortcuts, written out layer by layer."""
    layers = _layers(unit)
    last = len(layers) - 1
    h = x
    for i, (w, norm, stride) in enumerate(layers):
        if unit_name == "original":  # ReLU(x + BN(W_k ... ReLU(BN(W_1 x))))
            h = bn(norm, conv(w, h, stride))
            h = h if i == last else F.relu(h)
        elif unit_name == "bn_after_addition":  # ReLU(BN(x + W_k ReLU(... ReLU(BN(W_1 x)))))
            h = conv(w, h, stride)
            h = h if i == last else F.relu(bn(norm, h))
        elif unit_name == "relu_before_addition":  # x + ReLU(BN(W_k ... ReLU(BN(W_1 x))))
            h = F.relu(bn(norm, conv(w, h, stride)))
        elif unit_name == "relu_only_preact":  # x + BN(W_k ReLU(... BN(W_1 ReLU(x))))
            h = bn(norm, conv(w, F.relu(h), stride))
        else:  # full_preact: x + W_k ReLU(BN(... W_1 ReLU(BN(x))))
            h = conv(w, F.relu(bn(norm, h)), stride)
    y = x + h
    if unit_name == "original":
        return F.relu(y)
    if unit_name == "bn_after_addition":
        return F.relu(bn(layers[-1][1], y))
    return y


@pytest.mark.parametrize("form", [BasicUnit, BottleneckUnit])
@pytest.mark.parametrize("unit_name", UNITS)
@torch.no_grad()
def test_each_unit_follows_its_equation(form: type, unit_name: str) -> None:
    # A hand-built 1x4x3x3 input with positive and negative values: each ReLU and BN shows.
    channels = 4 * form.expansion
    unit = form(channels, 4, shortcut=nn.Identity(), order=bn_order(unit_name), unit=unit_name)
    _with_random_bn(unit)
    x = torch.arange(9.0 * channels).reshape(1, channels, 3, 3) / (4.5 * channels) - 1
    torch.testing.assert_close(unit(x), equation(unit_name, unit, x))


@pytest.mark.parametrize("unit_name", UNITS)
@torch.no_grad()
def test_units_differ(unit_name: str) -> None:
    # The equations are not the same function: each unit disagrees with every other on x.
    x = torch.randn(1, 4, 3, 3)
    unit = _with_random_bn(BasicUnit(4, 4, shortcut=nn.Identity(), order=bn_order(unit_name),
                                     unit=unit_name))  # fmt: skip
    for other in UNITS:
        if other != unit_name:
            assert not torch.allclose(unit(x), equation(other, unit, x), atol=1e-3)


def _branch(unit: BasicUnit, x: Tensor) -> Tensor:
    """F(x) of an original unit: BN(W_2 ReLU(BN(W_1 x)))."""
    (w1, bn1, s1), (w2, bn2, _) = _layers(unit)
    return bn(bn2, conv(w2, F.relu(bn(bn1, conv(w1, x, s1)))))


def _shortcut_unit(variant: str, **kwargs: float) -> BasicUnit:
    addition = Addition(variant, 4, 4, **kwargs)
    unit = BasicUnit(4, 4, shortcut=nn.Identity(), unit="original", addition=lambda **_: addition)
    return _with_random_bn(unit)


@torch.no_grad()
def test_constant_scaling() -> None:
    unit = _shortcut_unit("constant_scaling", shortcut_scale=0.5, residual_scale=1.0)
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(unit(x), F.relu(0.5 * x + _branch(unit, x)))


@pytest.mark.parametrize("variant", ["exclusive_gating", "shortcut_only_gating"])
@torch.no_grad()
def test_gating(variant: str) -> None:
    unit = _shortcut_unit(variant, gate_bias=-6.0)
    gate = unit.addition.gate
    assert torch.equal(gate.bias, torch.full((4,), -6.0))
    gate.bias.uniform_(-1, 1)  # a gate that is neither open nor shut
    x = torch.randn(2, 4, 3, 3)
    g = torch.sigmoid(F.conv2d(x, gate.weight, gate.bias))
    on_f = g if variant == "exclusive_gating" else 1
    torch.testing.assert_close(unit(x), F.relu((1 - g) * x + on_f * _branch(unit, x)))


@torch.no_grad()
def test_dropout_on_the_shortcut() -> None:
    unit = _shortcut_unit("dropout", shortcut_dropout=0.5)
    x = torch.rand(4, 4, 3, 3) + 0.1
    torch.testing.assert_close(unit(x), F.relu(0.5 * x + _branch(unit, x)))  # test: expectation
    unit.train()
    branch = torch.randn_like(x)
    kept = unit.addition(x, x, branch) - branch  # training: each element kept (×1) or dropped
    assert set(torch.unique((kept / x).round(decimals=4)).tolist()) == {0.0, 1.0}
    assert 0.3 < (kept != 0).float().mean() < 0.7


@torch.no_grad()
def test_conv1x1_shortcut_is_option_c_on_every_unit() -> None:
    model = _with_random_bn(PreActResNet(20, "original", shortcut="conv1x1"))
    assert all(isinstance(u.shortcut, nn.Sequential) for u in model.blocks)  # 1x1 conv + BN
    unit = model.blocks[1]
    x = torch.randn(2, 16, 4, 4)
    projected = bn(unit.shortcut[1], conv(unit.shortcut[0].weight, x))
    torch.testing.assert_close(unit(x), F.relu(projected + _branch(unit, x)))


@torch.no_grad()
def test_zero_padding_and_projection_on_dimension_increase() -> None:
    basic = PreActResNet(110, "original")
    assert isinstance(basic.stages[1][0].shortcut, ZeroPadShortcut)  # option A: no parameters
    # A shape-changing shortcut of a pre-activation unit takes the shared activation.
    unit = _with_random_bn(
        BottleneckUnit(8, 4, stride=2, shortcut=make_shortcut("B", 8, 16, 2, order="pre"),
                       order="pre", unit="full_preact")
    )  # fmt: skip
    x = torch.randn(1, 8, 5, 5)
    activated = F.relu(bn(unit.bn1, x))
    (w1, _, s1), (w2, bn2, _), (w3, bn3, _) = _layers(unit)
    branch = conv(w3, F.relu(bn(bn3, conv(w2, F.relu(bn(bn2, conv(w1, activated, s1)))))))
    torch.testing.assert_close(unit(x), conv(unit.shortcut.weight, activated, 2) + branch)


@torch.no_grad()
def test_full_preact_net_ends_with_bn_relu() -> None:
    # conv1 → BN → ReLU is the first unit's activation; a BN-ReLU follows the last addition.
    model = _with_random_bn(PreActResNet(29, bottleneck=True, in_channels=1))  # 3 per stage
    assert isinstance(model.final_bn, nn.BatchNorm2d) and model.final_bn.num_features == 256
    assert model.blocks[0].bn1 is None
    x = torch.randn(2, 1, 8, 8)
    h = F.relu(bn(model.bn1, conv(model.conv1.weight, x)))
    for unit in model.blocks:
        h = unit(h)
    expected = model.fc(F.relu(bn(model.final_bn, h)).mean((2, 3)))
    torch.testing.assert_close(model(x), expected)
    without = model.fc(h.mean((2, 3)))  # the final BN-ReLU changes the output
    assert not torch.allclose(model(x), without, atol=1e-3)


def test_final_activation_per_unit() -> None:
    assert PreActResNet(20, "original").final_bn is None  # its units end with a ReLU
    assert isinstance(PreActResNet(20, "relu_only_preact").final_bn, nn.Identity)  # ReLU alone
    assert isinstance(PreActResNet(20, "full_preact").final_bn, nn.BatchNorm2d)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"depth": 110, "unit": "preact"}, "model: unit: 'preact' is not one of ['original', "),
        ({"depth": 110, "shortcut": "gate"}, "model: shortcut: 'gate' is not one of ['identity', "),
        ({"depth": 165, "bottleneck": True}, "model: depth: 165 is not of the form 9n+2 for bott"),
        ({"depth": 165}, "model: depth: 165 is not of the form 6n+2"),
    ],
)
def test_bad_model_arguments_are_one_line(spec: dict, message: str) -> None:
    params = yaml.safe_load(PARAMS.read_text())
    params["networks"]["original"]["model"] = spec
    with pytest.raises(ConfigError) as error:
        resolve(params, paper="preact_resnet", arm="original", dataset="fashion_mnist", seed=0)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    allowed = {"unit": UNITS, "shortcut": SHORTCUTS}
    for field, values in allowed.items():
        if field in spec:
            assert all(repr(v) in str(error.value) for v in values)


def test_every_network_of_the_paper_profile_resolves() -> None:
    params = yaml.safe_load(PARAMS.read_text())
    params["profile"] = "paper"
    for arm in params["networks"]:
        if "1001" not in arm:  # ResNet-1001 is counted above, on the meta device
            resolve(params, paper="preact_resnet", arm=arm, dataset="cifar100", seed=0)
    spec = {"class_path": "papers.preact_resnet.model.PreActResNet", "depth": 110}
    assert build_model(spec, 3, 100).fc.out_features == 100
