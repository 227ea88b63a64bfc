"""papers/lm_resnet/model.py against Lu et al. 2018: the LM update on a hand-checked tensor, k_n = 0
as papers/resnet's ResNet, u_{n−1} across transitions, the parameter counts, trained and logged
k_n, stochastic depth and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.config import ConfigError, build_model
from common.metrics import count_params
from common.training import fit
from papers.lm_resnet.model import K_INIT, LMBasicBlock, LMResNet
from papers.preact_resnet.model import PreActResNet
from papers.resnet.model import CifarResNet
from papers.stochastic_depth.model import survival_probs
from tests.conftest import assert_trains_on_fashion_mnist_and_pickles
from tests.test_training import read_history

LM = "papers.lm_resnet.model.LMResNet"


def centre_taps(conv: nn.Conv2d, tap: float) -> None:
    """A 1→1 channel 3x3 conv that multiplies its input by `tap`."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = tap


def grid(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows).view(1, 1, len(rows), len(rows[0]))


@pytest.mark.parametrize(
    ("order", "expected"),
    [("pre", grid([3.25, -1.0], [1.125, 8.25])), ("post", grid([3.25, 0.0], [1.125, 8.25]))],
)
def test_lm_block_is_the_formula(order: str, expected: torch.Tensor) -> None:
    """f(u) = 2·ReLU(u) (centre taps 1 and 2, BNs the identity), k = 1/4: u_{n+1} =
    0.75·u + 0.25·u_prev + 2·ReLU(u), entry by entry; post order: its ReLU."""
    block = LMBasicBlock(1, 1, shortcut=nn.Identity(), order=order).eval()
    centre_taps(block.conv1, 1.0)
    centre_taps(block.conv2, 2.0)
    for bn in (block.bn1, block.bn2):
        bn.running_var.fill_(1 - bn.eps)
    block.k = nn.Parameter(torch.tensor(0.25))
    u, u_prev = grid([1.0, -2.0], [0.5, 3.0]), grid([2.0, 2.0], [-1.0, 0.0])
    with torch.no_grad():
        out, passed_on = block(u, u_prev)
    torch.testing.assert_close(out, expected)
    assert passed_on is u  # u_n is the next block's u_{n−1}


@pytest.mark.parametrize(
    ("lm", "resnet"),
    [
        (lambda: LMResNet(20), lambda: CifarResNet(20, order="pre")),
        (lambda: LMResNet(20, order="post"), lambda: CifarResNet(20)),
        (lambda: LMResNet(164, bottleneck=True), lambda: PreActResNet(164, bottleneck=True)),
    ],
    ids=["pre", "post", "bottleneck-164"],
)
def test_k_zero_is_the_resnet_with_the_same_weights(lm, resnet) -> None:
    """k_n = 0 in the paper's parameterisation (the official code's k = 1)."""
    torch.manual_seed(0)
    lm_net, res_net = lm(), resnet()
    with torch.no_grad():
        for k in lm_net.k.values():
            k.zero_()
    state = {name: v for name, v in lm_net.state_dict().items() if not name.endswith(".k")}
    res_net.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 8, 8)
    for train in (True, False):
        torch.testing.assert_close(lm_net.train(train)(x), res_net.train(train)(x))
    with torch.no_grad():
        next(iter(lm_net.k.values())).fill_(0.5)
        assert not torch.allclose(lm_net(x), res_net(x))


def test_u_prev_is_the_previous_input_or_a_transitions_shortcut() -> None:
    """u_{n−1} of an LM block: the previous block's input, or after a transition its option-A
    shortcut of the activated input (subsampled, zero-padded); a stage's first block has no k."""
    torch.manual_seed(0)
    model = LMResNet(20).eval()
    inputs: list[tuple[torch.Tensor, torch.Tensor]] = []
    for block in model.blocks:
        block.register_forward_pre_hook(lambda _, args: inputs.append(args))
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16))
        assert [block.k is None for block in model.blocks] == [True, False, False] * 3
        for n in (1, 2, 4, 5, 7, 8):
            previous, u_prev = model.blocks[n - 1], inputs[n - 1][0]
            if previous.k is None and n > 1:  # after a transition
                activated = F.relu(previous.bn1(u_prev))[:, :, ::2, ::2]
                u_prev = F.pad(activated, (0, 0, 0, 0, 0, activated.shape[1]))
            assert torch.equal(inputs[n][1], u_prev), n


@pytest.mark.parametrize(
    ("depth", "bottleneck", "ks", "params"),
    [
        (20, False, 6, 269_728),
        (32, False, 12, 464_166),
        (44, False, 18, 658_604),
        (56, False, 24, 853_042),
        (110, False, 51, 1_728_013),
        (164, True, 51, 1_703_309),
    ],
)
def test_params_are_the_resnets_plus_one_k_per_lm_block(
    depth: int, bottleneck: bool, ks: int, params: int
) -> None:
    with torch.device("meta"):  # counts depend on shapes only
        model = LMResNet(depth, bottleneck=bottleneck)
        resnet = PreActResNet(depth, bottleneck=True) if bottleneck else CifarResNet(depth)
        post = LMResNet(depth, order="post", bottleneck=bottleneck)
    assert len(model.k) == ks == 3 * ((depth - 2) // (9 if bottleneck else 6) - 1)  # 3(n − 1)
    assert count_params(model) == params == count_params(resnet) + ks
    assert count_params(post) == params + (896 if bottleneck else 0)  # BN after each conv


def test_k_is_initialised_trained_and_reported() -> None:
    torch.manual_seed(0)
    model = LMResNet(14, in_channels=1)  # n = 2: one LM block per stage
    names = ["k_stage1_block2", "k_stage2_block2", "k_stage3_block2"]
    before = model.metrics()
    assert list(before) == names
    assert all(K_INIT[0] <= v <= K_INIT[1] for v in before.values())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 1, 12, 12), torch.randint(0, 10, (16,))
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    after = model.metrics()
    assert all(abs(after[name] - before[name]) > 1e-6 for name in names)
    assert after == {name: k.item() for name, k in model.k.items()}
    assert model.eval().metrics() == {}  # eval splits would repeat the same weights


def test_k_is_a_column_of_the_history(tmp_path, prepared_file, make_config) -> None:
    config = make_config(model={"class_path": LM, "depth": 14})
    fit(config, prepared_file, tmp_path)
    rows = read_history(tmp_path)
    columns = [c for c in rows[0] if "_k_" in c]
    assert columns == ["train_k_stage1_block2", "train_k_stage2_block2", "train_k_stage3_block2"]
    for column in columns:
        first, second = (row[column] for row in rows)
        assert math.isfinite(first) and first != second  # the epoch means move as k_n trains


def test_survival_probs_are_stochastic_depths_linear_rule() -> None:
    assert LMResNet(20).survival_probs == [1.0] * 9
    assert LMResNet(20, survival_prob=0.5).survival_probs == survival_probs(9, 0.5, "linear")
    assert LMResNet(164, bottleneck=True, survival_prob=0.8).survival_probs == survival_probs(
        54, 0.8, "linear"
    )


def manual_branch(block: LMBasicBlock, u: torch.Tensor) -> torch.Tensor:
    """f_n(u) of a pre-activation basic block, written out independently of the model."""
    return block.conv2(F.relu(block.bn2(block.conv1(F.relu(block.bn1(u))))))


@pytest.mark.parametrize("index", [1, 8])  # the second block and the last, p_n < 1 both
def test_stochastic_lm_block_at_test_and_while_training(index: int) -> None:
    torch.manual_seed(0)
    model = LMResNet(20, survival_prob=0.5)
    block = model.blocks[index]
    k, p = block.k.detach(), block.survival_prob
    assert 0.5 <= p < 1
    c = block.conv1.in_channels
    u, u_prev = torch.randn(4, c, 8, 8), torch.randn(4, c, 8, 8)
    base = (1 - k) * u + k * u_prev
    calls: list[int] = []
    block.conv1.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        block.eval()
        expected = base + p * manual_branch(block, u)  # E[b_n] f_n = p_n f_n
        torch.testing.assert_close(block(u, u_prev)[0], expected)
        torch.testing.assert_close(block(u, u_prev)[0], expected)  # no draw at test
        block.train()
        outcomes = set()
        for seed in range(64):  # until both outcomes are seen
            before = len(calls)
            torch.manual_seed(seed)
            out = block(u, u_prev)[0]
            ran = len(calls) > before
            if ran:  # b_n = 1: the branch unscaled
                torch.testing.assert_close(out, base + manual_branch(block, u))
            else:  # b_n = 0: f_n never evaluated
                assert torch.equal(out, base)
            outcomes.add(ran)
            if outcomes == {True, False}:
                break
    assert outcomes == {True, False}


def test_without_stochastic_depth_no_random_draws() -> None:
    model = LMResNet(20).train()
    x = torch.randn(2, 3, 16, 16)
    state = torch.get_rng_state()
    model(x)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"depth": 21}, "model: depth: 21 is not of the form 6n+2"),
        ({"depth": 111, "bottleneck": True}, "model: depth: 111 is not of the form 9n+2"),
        ({"depth": 20, "survival_prob": 0.0}, "model: survival_prob: 0.0 is outside (0, 1]"),
        ({"depth": 20, "survival_prob": 1.5}, "model: survival_prob: 1.5 is outside (0, 1]"),
        ({"depth": 20, "order": "mid"}, "model: order: 'mid' is not one of ['post', 'pre']"),
        ({"depth": 20, "shortcut": "D"}, "model: shortcut: 'D' is not one of ['A', 'B', 'C']"),
        ({"depth": 20, "survival_prob": "x"}, "model.survival_prob: 'x' is not of type float"),
    ],
)
def test_bad_input_is_one_line_naming_the_argument(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_model({"class_path": LM, **spec}, 3, 10)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_forward_on_fashion_mnist_and_picklable() -> None:
    assert_trains_on_fashion_mnist_and_pickles(LMResNet(20, in_channels=1, survival_prob=0.5))
