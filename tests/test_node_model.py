"""Neural ODEs (papers/node): Table 1's parameter counts, adjoint vs direct gradients, NFE counts,
RK-Net's block as one RK step, bad solver arguments, and the memory probe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from common.config import ConfigError, build_model
from common.metrics import count_params
from papers.node.model import MLP, ODEBlock, ODENet, ResNet, RKNet
from papers.node.probe import MMAP_ENV

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("network", "downsampling", "params"),
    [
        (ResNet, "conv", 576_778),
        (ResNet, "res", 601_482),  # Table 1's 0.60M
        (RKNet, "conv", 208_266),
        (ODENet, "conv", 208_266),  # torchdiffeq's examples/odenet_mnist.py prints 208,266
        (ODENet, "res", 232_970),
    ],
)
def test_parameter_counts(network: type, downsampling: str, params: int) -> None:
    assert count_params(network(downsampling=downsampling)) == params


def test_mlp_parameter_count() -> None:
    assert count_params(MLP()) == 238_510  # Table 1's 0.24M: 784-300-10


class Linear(nn.Module):
    """dh/dt = A h, a linear ODE with a known solution h(1) = exp(A) h(0)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h @ self.a.T


@pytest.mark.parametrize(("method", "per_step"), [("rk4", 4), ("euler", 1), ("midpoint", 2)])
@pytest.mark.parametrize("steps", [1, 3])
def test_nfe_of_fixed_grid_solves(method: str, per_step: int, steps: int) -> None:
    torch.manual_seed(0)
    block = ODEBlock(Linear(0.1 * torch.randn(3, 3)), method, adjoint=True, steps=steps)
    block(torch.randn(2, 3, requires_grad=True)).sum().backward()
    assert block.metrics() == {"nfe_forward": per_step * steps, "nfe_backward": per_step * steps}
    assert block.metrics() == {"nfe_forward": 0.0, "nfe_backward": 0.0}  # since the last call


def test_rk4_solves_a_linear_ode() -> None:
    a = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)  # a rotation
    block = ODEBlock(Linear(a), "rk4", adjoint=False, steps=8)
    h0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    expected = h0 @ torch.linalg.matrix_exp(a).T
    assert torch.allclose(block(h0), expected, atol=1e-5)


def test_rk_net_block_is_one_runge_kutta_step() -> None:
    """One step of h = 1 of torchdiffeq's rk4 (Kutta's 3/8 rule) of the block's own f."""
    torch.manual_seed(0)
    net = RKNet(channels=4, method="rk4", steps=1)
    f, h = net.block.func, torch.randn(2, 4, 6, 6)
    t = torch.tensor
    with torch.no_grad():
        k1 = f(t(0.0), h)
        k2 = f(t(1 / 3), h + k1 / 3)
        k3 = f(t(2 / 3), h + k2 - k1 / 3)
        k4 = f(t(1.0), h + k1 - k2 + k3)
        assert torch.allclose(net.block(h), h + (k1 + 3 * k2 + 3 * k3 + k4) / 8, atol=1e-5)
        # Hand-checked: f ≡ β (the last GroupNorm's shift, its scale 0) moves h by exactly β.
        f.norm3.weight.zero_()
        f.norm3.bias.fill_(0.5)
        assert torch.allclose(net.block(h), h + 0.5)


class Smooth(nn.Module):
    """dh/dt = tanh(W h + b t): smooth, so both gradients converge to the same as tol → 0 (the
    ODE-Net's ReLUs make f non-differentiable at kinks: there they differ by ~0.5%)."""

    def __init__(self) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(torch.randn(4, 4) / 2), nn.Parameter(torch.randn(4))

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h @ self.w.T + self.b * t)


def test_adjoint_gradients_agree_with_direct_backprop() -> None:
    grads = []
    for adjoint in (True, False):
        torch.manual_seed(0)
        func = Smooth().double()
        block = ODEBlock(func, "dopri5", rtol=1e-7, atol=1e-7, adjoint=adjoint)
        h0 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
        block(h0).square().sum().backward()
        grads.append(torch.cat([func.w.grad.flatten(), func.b.grad, h0.grad.flatten()]))
    adjoint, direct = grads
    assert (adjoint - direct).norm() <= 1e-5 * direct.norm()  # two solves, each within 1e-7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"rtol": 0.0}, "model: rtol: 0.0 must be a number > 0"),
        ({"atol": -1e-3}, "model: atol: -0.001 must be a number > 0"),
        ({"method": "rk5"}, "model: method: 'rk5' is not one of ['dopri5'"),
        ({"method": "rk4"}, "model: steps: None must be an integer >= 1 for method 'rk4'"),
        ({"steps": 4}, "model: steps: only for fixed-grid methods"),
        ({"rtol": "tight"}, "model.rtol: 'tight' is not of type float"),
    ],
)
def test_bad_solver_arguments_are_one_line(args: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_model({"class_path": "papers.node.model.ODENet", **args}, 1, 10)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


PROBE_SCRIPT = """
import torch
from papers.node.probe import peak_mib, training_step_mib
print(peak_mib(lambda: torch.ones(64 * 2**18).sum()), peak_mib(lambda: None))  # 64 MiB, nothing
for arm in ("resnet", "rk_net", "ode_net"):
    print(*(training_step_mib(arm, length, 8, 64, 0) for length in (2, 8)))
"""


@pytest.fixture(scope="module")
def probed() -> list[list[float]]:
    """PROBE_SCRIPT's figures, from a process started as dvc.yaml starts the memory stage."""
    env = {**os.environ, **MMAP_ENV, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return [[float(v) for v in line.split()] for line in out.stdout.splitlines()]


def test_memory_probe_sees_what_a_step_holds(probed: list[list[float]]) -> None:
    held, nothing = probed[0]
    assert 60 <= held <= 72 and nothing < 4, (held, nothing)


def test_memory_grows_with_depth_only_without_the_adjoint(probed: list[list[float]]) -> None:
    resnet, rk, adjoint = probed[1:]
    assert resnet[1] > resnet[0] + 1 and rk[1] > rk[0] + 2 * (resnet[1] - resnet[0])
    assert abs(adjoint[1] - adjoint[0]) < 0.5, adjoint


def _memory_error(params: Path, out: Path) -> str:
    """What `analysis memory` exits with, having written nothing."""
    from papers.node import analysis

    with pytest.raises(SystemExit) as exit_:
        analysis.main(["memory", "--params", str(params), "--out", str(out)])
    assert not out.exists()
    return str(exit_.value)


def test_memory_needs_the_mmap_threshold(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert _memory_error(REPO / "papers/node/params.yaml", tmp_path / "memory") == (
        "error: memory: start the process with MALLOC_MMAP_THRESHOLD_=65536, as dvc.yaml does"
    )


def test_memory_batch_too_small_to_count_is_one_line(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "papers/node/params.yaml").read_text())
    params["profile"] = "smoke"  # 8 channels: activations of 64 KiB need 57 images
    params["analysis"]["smoke"]["memory"]["batch_size"] = 56
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert _memory_error(tmp_path / "params.yaml", tmp_path / "memory") == (
        "error: analysis.smoke.memory.batch_size: 56 must be >= 57 at 8 channels "
        "(smaller activations are not counted)"
    )
