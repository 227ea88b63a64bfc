"""papers/dpn/model.py against Chen et al. 2017 and timm's dpn: parameters and multiply-adds of
DPN-68/92/98/131 (the paper's as papers.md §7 quotes them), timm's state_dicts and outputs, the
widths of the two paths block by block, the dual path block's equations, the CIFAR network, the
one-line errors."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import timm
import torch
from torch import Tensor, nn

from common.config import ConfigError, build_model
from common.metrics import count_macs, count_params
from papers.dpn.model import (
    CONFIGS,
    DPN,
    CifarDPN,
    DualPathBlock,
    ImageNetDPN,
    dpn68,
    dpn92,
    dpn98,
    dpn131,
)
from papers.resnext.model import CifarResNeXt
from tests.test_resnet_model import randomize_bn

# Ours, to the integer: 3 input channels, 1000 classes, multiply-adds at 1x3x224x224.
EXACT = {
    "dpn68": (12_611_602, 2_326_163_456),
    "dpn92": (37_668_392, 6_501_684_224),
    "dpn98": (61_570_728, 11_671_217_152),
    "dpn131": (79_254_504, 16_013_648_896),
}
# What the paper prints (params in M, "FLOPs" in G, i.e. multiply-adds; papers.md §7): its parameter
# counts are above the faithful networks' (timm's, the authors' converted weights) by 0.13-0.25M,
# more than rounding (37.8M vs 37,668,392); its FLOPs round ours but DPN-68's 2.5G (7% above 2.33G,
# from the authors' README).
PAPER = {
    "dpn68": (None, 2.5),
    "dpn92": (37.8, 6.5),
    "dpn98": (61.7, 11.7),
    "dpn131": (79.5, 16.0),
}
FACTORIES = {"dpn68": dpn68, "dpn92": dpn92, "dpn98": dpn98, "dpn131": dpn131}


@functools.cache
def on_meta(name: str) -> tuple[nn.Module, int, int]:
    """ImageNetDPN `name` on the meta device (counts depend on shapes only), params, MACs."""
    with torch.device("meta"):
        model = FACTORIES[name]()
        return model, count_params(model), count_macs(model, (1, 3, 224, 224))


@pytest.mark.parametrize("name", CONFIGS)
def test_params_and_macs_equal_timm_and_the_paper(name: str) -> None:
    model, params, macs = on_meta(name)
    assert (params, macs) == EXACT[name]
    with torch.device("meta"):
        theirs = timm.create_model(name, pretrained=False)
    assert count_params(theirs) == params
    model.load_state_dict(theirs.state_dict(), strict=True)
    if name == "dpn92":
        with torch.device("meta"):
            assert count_params(DPN()) == params  # DPN's defaults are DPN-92's
    printed_params, printed_macs = PAPER[name]
    if printed_params is not None:
        assert 0.1 < printed_params - params / 1e6 < 0.3  # the paper's count is above ours
    if name == "dpn68":
        assert 0.07 < printed_macs / (macs / 1e9) - 1 < 0.08
    else:
        assert f"{macs / 1e9:.1f}" == f"{printed_macs:.1f}"


@pytest.mark.parametrize(
    ("name", "side"), [("dpn68", 64), ("dpn92", 64), ("dpn98", 32), ("dpn131", 32)]
)
def test_outputs_equal_timm(name: str, side: int) -> None:
    """timm's weights (random here, nothing downloaded) load into ours with strict=True and give
    the same outputs, eval mode, BN statistics randomized."""
    torch.manual_seed(0)
    theirs = timm.create_model(name, pretrained=False).eval()
    randomize_bn(theirs)
    # timm's DPN takes fc_act_layer="elu", but the final BN-act it builds is a ReLU, as ours
    assert isinstance(theirs.features.conv5_bn_ac.bn.act, nn.ReLU)
    ours = ImageNetDPN(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def path_widths(model: DPN, shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """(residual channels, dense channels, side) after each block, on the model's device."""
    widths: list[tuple[int, int, int]] = []

    def record(_m: nn.Module, _i: object, out: tuple[Tensor, Tensor]) -> None:
        residual, dense = out
        widths.append((residual.shape[1], dense.shape[1], residual.shape[-1]))

    hooks = [block.register_forward_hook(record) for block in model.blocks]
    model(torch.zeros(shape, device=next(model.parameters()).device))
    for hook in hooks:
        hook.remove()
    return widths


@pytest.mark.parametrize("name", CONFIGS)
def test_path_widths_follow_the_configuration(name: str) -> None:
    """After block j of stage s: R·2^s residual channels and (j + 2)·k_s dense ones (a stage's
    projection starts the dense path at 2·k_s, each block adds k_s), against timm's features."""
    model, _, _ = on_meta(name)
    config = CONFIGS[name]
    expected = [
        (config["residual_width"] * 2**s, (j + 2) * k, 56 // 2**s)
        for s, (n, k) in enumerate(zip(config["blocks"], config["increments"], strict=True))
        for j in range(1, n + 1)
    ]
    with torch.device("meta"):
        widths = path_widths(model, (1, 3, 224, 224))
    assert widths == expected
    if name == "dpn92":  # DPN-92's conv2: 256 (+16) x 3 (the paper's Table 1)
        assert widths[:3] == [(256, 48, 56), (256, 64, 56), (256, 80, 56)]
        assert sum(widths[-1][:2]) == model.num_features == 2688
    # timm carries both paths as one tensor; its stage ends have our widths
    with torch.device("meta"):
        theirs = timm.create_model(name, pretrained=False)
    ends = [sum(widths[sum(config["blocks"][: s + 1]) - 1][:2]) for s in range(4)]
    assert ends == [info["num_chs"] for info in theirs.feature_info[1:]]
    assert [len(stage) for stage in model.stages] == list(config["blocks"])
    kinds = [block.block_type for block in model.blocks]
    firsts = [0, *[sum(config["blocks"][: s + 1]) for s in range(3)]]
    assert kinds == [
        "proj" if i == 0 else "down" if i in firsts else "normal" for i in range(len(kinds))
    ]


def test_block_adds_to_the_residual_path_and_concatenates_to_the_dense_path() -> None:
    """The equations: residual ← residual + out[:R]; dense ← [dense, out[R:]], the earlier dense
    features unchanged; a projecting block restarts both paths from a 1x1 of both."""
    torch.manual_seed(0)
    block = DualPathBlock(24 + 12, bottleneck=16, residual_width=24, increment=4, groups=4)
    randomize_bn(block)
    block = block.double().eval()
    residual = torch.randn(2, 24, 5, 5, dtype=torch.float64)
    dense = torch.randn(2, 12, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        new_residual, new_dense = block((residual, dense))
        out = block.c1x1_c(block.c3x3_b(block.c1x1_a(torch.cat([residual, dense], 1))))
    assert block.c3x3_b.conv.groups == 4 and block.projection is None
    torch.testing.assert_close(new_residual, residual + out[:, :24])
    torch.testing.assert_close(new_dense, torch.cat([dense, out[:, 24:]], 1))
    assert torch.equal(new_dense[:, :12], dense)

    down = DualPathBlock(36, 16, 32, 4, 4, block_type="down").double().eval()
    with torch.no_grad():
        new_residual, new_dense = down((residual, dense))
        starts = down.c1x1_w_s2(torch.cat([residual, dense], 1))
        out = down.c1x1_c(down.c3x3_b(down.c1x1_a(torch.cat([residual, dense], 1))))
    assert down.c1x1_w_s1 is None and down.c1x1_w_s2.conv.stride == (2, 2)
    assert new_residual.shape == (2, 32, 3, 3) and new_dense.shape == (2, 12, 3, 3)
    torch.testing.assert_close(new_residual, starts[:, :32] + out[:, :32])
    torch.testing.assert_close(new_dense, torch.cat([starts[:, 32:], out[:, 32:]], 1))


# The CPU profile's DPN against CIFAR ResNeXt-29 4x6d (base width 16) on 1x28x28, 10 classes.
CIFAR_DPN = {"blocks": [3, 3, 3], "increments": [8, 16, 32], "k_r": 20, "groups": 4}
CIFAR_DPN |= {"stem_width": 16, "residual_width": 56}  # CifarDPN's defaults
CIFAR_DPN_COUNTS = (307_734, 35_995_712)
RESNEXT_29_4X6D = (309_002, 36_455_424)


def test_cifar_dpn_matches_resnext_29() -> None:
    with torch.device("meta"):
        ours = CifarDPN(**CIFAR_DPN, in_channels=1, num_classes=10)
        resnext = CifarResNeXt(29, 4, 6, 16, in_channels=1, num_classes=10)
        counts = count_params(ours), count_macs(ours, (1, 1, 28, 28))
        theirs = count_params(resnext), count_macs(resnext, (1, 1, 28, 28))
        widths = path_widths(ours, (1, 1, 28, 28))
    assert counts == CIFAR_DPN_COUNTS and theirs == RESNEXT_29_4X6D
    assert all(abs(a / b - 1) < 0.05 for a, b in zip(counts, theirs, strict=True))
    assert [w[2] for w in widths] == [28] * 3 + [14] * 3 + [7] * 3  # no stem stride, no max pool
    assert "conv1_pool" not in dict(ours.features.named_children())
    model = build_model({"class_path": "papers.dpn.model.CifarDPN", **CIFAR_DPN}, 1, 10)
    torch.manual_seed(0)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DPN(groups=0), "groups: 0 must be >= 1"),
        (lambda: DPN(k_r=0), "k_r: 0 must be >= 1"),
        (lambda: DPN(groups=7), "groups: 7 does not divide k_r 96"),
        (
            lambda: DPN(increments=[16, 32, 24]),
            "increments: 3 values for 4 stages (blocks [3, 4, 20, 3])",
        ),
        (lambda: DPN(blocks=[]), "blocks: [] must give at least one stage"),
        (lambda: DPN(blocks=[3, 0, 20, 3]), "blocks: [3, 0, 20, 3] must all be integers >= 1"),
        (lambda: CifarDPN(increments=[4, 8, 0]), "increments: [4, 8, 0] must all be integers >= 1"),
        (lambda: CifarDPN(stem_width=0), "stem_width: 0 must be >= 1"),
        (
            lambda: ImageNetDPN("dpn107"),
            "name: 'dpn107' is not one of ['dpn68', 'dpn92', 'dpn98', 'dpn131']",
        ),
        (lambda: DualPathBlock(8, 8, 8, 4, 4, "up"), "block_type: 'up' is not one of"),
    ],
)
def test_bad_arguments_are_one_line_errors(build: Callable[[], nn.Module], message: str) -> None:
    with torch.device("meta"), pytest.raises(ValueError) as err:
        build()
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_bad_arguments_through_the_config() -> None:
    spec = {"class_path": "papers.dpn.model.CifarDPN", "k_r": 24, "groups": 5}
    with pytest.raises(ConfigError) as err:
        build_model(spec, in_channels=1, num_classes=10)
    assert str(err.value) == "model: groups: 5 does not divide k_r 24"
    spec = {"class_path": "papers.dpn.model.ImageNetDPN", "name": "dpn93"}
    with pytest.raises(ConfigError) as err:
        build_model(spec, in_channels=3, num_classes=1000)
    assert "\n" not in str(err.value) and str(err.value).startswith("model: name: 'dpn93'")
