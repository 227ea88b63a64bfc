"""Veit et al. 2016: lesions leave everything else untouched and are undone exactly, a trained plain
net breaks where a trained ResNet does not, path counts are binomial, and the sampled path gradient
agrees with autograd through the whole network."""

from __future__ import annotations

import copy
from math import comb

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.config import ConfigError
from papers.resnet.model import CifarResNet
from papers.resnets_as_ensembles import lesion
from papers.resnets_as_ensembles.analyze import AnalysisConfig, analysis_config
from papers.resnets_as_ensembles.model import SampledBlocksResNet


def _block_outputs(model: CifarResNet, x: Tensor) -> list[Tensor]:
    """Each slot's output, recorded by forward hooks on the stages' children."""
    outputs: list[Tensor] = []
    handles = [
        module.register_forward_hook(lambda m, i, o: outputs.append(o))
        for stage in model.stages
        for module in stage
    ]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return outputs


def test_deleted_block_leaves_other_blocks_untouched_and_is_restored() -> None:
    torch.manual_seed(0)
    model = CifarResNet(20, in_channels=1).eval()
    x = torch.randn(4, 1, 28, 28)
    state = copy.deepcopy(model.state_dict())
    modules = list(model.modules())
    intact = _block_outputs(model, x)
    units = lesion.lesion_units(model)
    with lesion.lesioned(model, [units[4]]):
        deleted = _block_outputs(model, x)
        # the deleted block passes its input on (ReLU of the identity of a ReLU output)
        assert torch.equal(deleted[4], deleted[3])
    for i in range(4):  # before it: the very same outputs
        assert torch.equal(deleted[i], intact[i])
    # after it, each block is the same function: fed the lesioned input, it gives what it gave
    with torch.no_grad():
        assert torch.equal(model.blocks[5](deleted[4]), deleted[5])
    assert not torch.equal(deleted[-1], intact[-1])
    # restored exactly: same modules in the same places, same weights and buffers, same output
    assert list(model.modules()) == modules
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(a, b) for a, b in zip(_block_outputs(model, x), intact, strict=True))


def test_lesion_is_restored_after_an_error() -> None:
    model = CifarResNet(20, in_channels=1)
    blocks = model.blocks
    with pytest.raises(RuntimeError), lesion.lesioned(model, [lesion.lesion_units(model)[0]]):
        raise RuntimeError("inside")
    assert model.blocks == blocks


def test_downsampling_block_keeps_its_shortcut_alone() -> None:
    model = CifarResNet(20, in_channels=1).eval()
    down = [u for u in lesion.lesion_units(model) if u.downsampling]
    assert [u.block for u in down] == [3, 6]  # first block of stages 2 and 3
    x, block = torch.rand(2, 16, 28, 28), model.blocks[3]
    with lesion.lesioned(model, [down[0]]), torch.no_grad():
        assert torch.equal(model.stages[1][0](x), block.shortcut(x))


def test_reordering_rejects_a_block_of_another_shape() -> None:
    model = CifarResNet(20, in_channels=1)
    order = list(range(9))
    order[2], order[4] = order[4], order[2]  # stage 1 and the downsampling block of stage 2
    with pytest.raises(ValueError, match="another shape"), lesion.lesioned(model, order=order):
        pass
    assert all((a, b) != (0, 3) for a, b in lesion.swappable_pairs(model))


def test_plain_net_deletes_layers_and_keeps_its_function_intact() -> None:
    torch.manual_seed(0)
    model = CifarResNet(20, plain=True, in_channels=1).eval()
    units = lesion.lesion_units(model)
    assert len(units) == 18 and sum(u.downsampling for u in units) == 2
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
        with lesion.lesioned(model, []):  # the layer-by-layer run equals the block's forward
            assert torch.equal(model(x), before)
        down = [u for u in units if u.downsampling][:1]
        with pytest.raises(ValueError, match="changes shape"), lesion.lesioned(model, down):
            pass


def _train(model: nn.Module, images: Tensor, labels: Tensor, steps: int) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(steps):
        batch = slice((step * 64) % len(labels), (step * 64) % len(labels) + 64)
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _toy_task(n: int) -> tuple[Tensor, Tensor]:
    """10 classes, each a fixed random 8x8 pattern plus noise: learnable in a few dozen steps."""
    generator = torch.Generator().manual_seed(0)
    patterns = torch.randn(10, 1, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return patterns[labels] + 0.5 * torch.randn(n, 1, 8, 8, generator=generator), labels


def test_trained_plain_net_breaks_where_a_trained_resnet_does_not() -> None:
    torch.manual_seed(0)
    images, labels = _toy_task(1024)
    test = [_toy_task(512)]
    plain, resnet = CifarResNet(20, plain=True, in_channels=1), CifarResNet(20, in_channels=1)
    for model in (plain, resnet):
        _train(model, images, labels, steps=60)
        assert lesion.test_error(model, test) < 10  # trained to a low error first
    plain_result = lesion.delete_one(plain, test, chance=90.0)
    resnet_result = lesion.delete_one(resnet, test, chance=90.0)
    assert plain_result["min_error"] > 60  # every layer matters: near chance
    # Most blocks do not (in this toy the first block after the stem does: ~70-78% error).
    changes = [u["error"] - resnet_result["base_error"] for u in resnet_result["units"]]
    assert np.median(changes) < 5


def test_path_counts_are_binomial() -> None:
    for n in (3, 27, 54):
        lengths = lesion.path_lengths(n)
        assert lengths["counts"] == [comb(n, k) for k in range(n + 1)]
        assert sum(lengths["counts"]) == 2**n
    low, high = lesion.path_lengths(54)["band"]
    assert (low, high) == (20, 34)  # ≥ 95% of 2^54 (the paper's 19–35 holds 98%)


def _autograd_path_gradient(model: CifarResNet, x: Tensor, y: Tensor, residual: set) -> Tensor:
    """Reference: autograd through the whole network, each block's residual branch (or, for
    the blocks in `residual`, its shortcut) detached; the gradient at the first block's input."""
    net = copy.deepcopy(model).eval()
    for i, block in enumerate(net.blocks):

        def forward(x: Tensor, block: nn.Module = block, through: bool = i in residual) -> Tensor:
            f, s = block.residual(x), block.shortcut(x)
            return F.relu(f + s.detach()) if through else F.relu(f.detach() + s)

        block.forward = forward
    start = net.stem_input = []
    net.stages[0].register_forward_pre_hook(
        lambda m, a: (start.append(a[0].detach().requires_grad_()) or start[0],)
    )
    loss = F.cross_entropy(net(x), y, reduction="sum")
    return torch.autograd.grad(loss, start[0])[0]


def test_sampled_gradient_matches_autograd_for_k0_and_any_path() -> None:
    torch.manual_seed(0)
    model = CifarResNet(20, in_channels=1).eval()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    paths = lesion.PathGradients(model, x, y)
    all_skip = _autograd_path_gradient(model, x, y, set())
    torch.testing.assert_close(paths.gradient([]), all_skip)
    result = lesion.path_gradients(model, x, y, 2, np.random.default_rng(0), mass=0.9)
    assert result["magnitude"][0] == pytest.approx(float(all_skip.flatten(1).norm(dim=1).mean()))
    chosen = {0, 3, 5, 8}
    torch.testing.assert_close(paths.gradient(chosen), _autograd_path_gradient(model, x, y, chosen))
    low, high = result["effective_band"]
    total = result["total"]
    assert sum(total[low : high + 1]) >= 0.9 * sum(total)


def test_shortest_band() -> None:
    assert lesion.shortest_band([0, 1, 8, 1, 0], 0.8) == (2, 2)
    assert lesion.shortest_band([1, 1, 1, 1], 0.5) == (0, 1)


def test_sampled_blocks_network_runs_k_blocks_per_batch() -> None:
    torch.manual_seed(0)
    model = SampledBlocksResNet(20, active_blocks=4, in_channels=1).train()
    model(torch.randn(2, 1, 28, 28))
    assert sum(block.active for block in model.blocks) == 4
    with pytest.raises(ValueError, match="active_blocks"):
        SampledBlocksResNet(20, active_blocks=10)


def test_analysis_settings_are_checked() -> None:
    assert analysis_config({}, "default") == AnalysisConfig()
    with pytest.raises(ConfigError, match=r"analyses\.smoke\.draws"):
        analysis_config({"analyses": {"smoke": {"draws": 3}}}, "smoke")
    with pytest.raises(ConfigError, match=r"analyses\.delete_draws"):
        analysis_config({"analyses": {"smoke": {"delete_draws": 1}}}, "smoke")
