"""Neural Ordinary Differential Equations — Chen, Rubanova, Bettencourt, Duvenaud 2018
(NeurIPS; arXiv 1806.07366).

A residual block is one Euler step of an ODE; an ODE block integrates the ODE itself:

    ResNet:   h_{t+1} = h_t + f(h_t, θ_t)                                          (Eq. 1)
    ODE-Net:  dh(t)/dt = f(h(t), t, θ),   h(1) = ODESolve(f, h(0), t0 = 0, t1 = 1)  (Eq. 2)

and trains it with the adjoint method (Eq. 3-5): a(t) = ∂L/∂h(t) is integrated backwards,
da/dt = −a(t)ᵀ ∂f/∂h, with dL/dθ = −∫_1^0 a(t)ᵀ ∂f/∂θ dt, in a second ODE solve, so training
memory does not grow with the number of function evaluations (NFE) of the forward solve.

Table 1 (MNIST), in the layout of torchdiffeq's examples/odenet_mnist.py (the authors' code):
downsample twice — conv3x3 (no padding) → GN-ReLU → conv4x4/2 → GN-ReLU → conv4x4/2, 64 channels,
28 → 26 → 13 → 6 px — then the feature layers, then GN-ReLU → global average pool → FC:

    ResNet:  6 pre-activation residual blocks h + conv3x3(ReLU(GN(conv3x3(ReLU(GN(h))))))
    RK-Net:  one ODE block, solved by dopri5 and backpropagated through directly (memory O(L̃))
    ODE-Net: one ODE block, f = GN(cconv(ReLU(GN(cconv(ReLU(GN(h))))))), cconv a 3x3 conv of
             [t, h] (the time as one more input channel), dopri5 at rtol = atol = 1e-3, adjoint
    MLP:     784 → 300 → 10, ReLU (the 1-layer MLP row, LeCun et al. 1998)

GN is GroupNorm with min(32, C/2) groups (the example's min(32, C) at C = 64, see `norm`).
This file guarantees (1 input channel, 10 classes, 64 channels):

    network   downsampling "conv" (the example's)   "res" (two residual blocks)   Table 1
    ResNet         576,778                              601,482                      0.60M
    RK-Net         208,266                              232,970                      0.22M
    ODE-Net        208,266                              232,970                      0.22M
    MLP            238,510                                 —                         0.24M

The example's own ODE-Net (its default, conv downsampling) is the 208,266 here. Its ResNet has
0.58M; the paper's 0.60M is the example's residual downsampling (`--downsampling-method res`),
whose ODE-Net has 0.23M: no one layout of the example prints both 0.60M and 0.22M, so the paper's
counts come from a variant of it we cannot recover (`published.yaml` says which row is which).

NFE: every ODE network counts its function evaluations, forward solve and backward (adjoint)
solve apart, and `metrics()` returns those since its last call: the classifier logs them per step.
ODE solving is torchdiffeq's (odeint, odeint_adjoint); its "rk4" is Kutta's 3/8 rule.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from papers.resnet.model import conv1x1, conv3x3, one_of

ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_GRID = ("euler", "midpoint", "rk4")
DOWNSAMPLINGS = ("conv", "res")


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm in groups of 2 channels, at most 32 groups: the example's min(32, C) groups at its
    64 channels. Its formula would make every group one channel below 64, which at 6x6 px is
    instance norm and trains far slower (measured: params.yaml); no BatchNorm, as f is evaluated
    at many t."""
    return nn.GroupNorm(min(32, max(1, channels // 2)), channels)


class ResBlock(nn.Module):
    """Pre-activation residual block h + conv(ReLU(GN(conv(ReLU(GN(h)))))), GroupNorm throughout.

    With a stride, the shortcut is a 1x1 projection of the activated input (the example's `res`
    downsampling); otherwise the identity.
    """

    def __init__(self, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.norm1 = norm(channels)
        self.conv1 = conv3x3(channels, channels, stride)
        self.norm2 = norm(channels)
        self.conv2 = conv3x3(channels, channels)
        self.shortcut = conv1x1(channels, channels, stride) if stride != 1 else None

    def forward(self, h: Tensor) -> Tensor:
        activated = torch.relu(self.norm1(h))
        out = self.conv2(torch.relu(self.norm2(self.conv1(activated))))
        return out + (h if self.shortcut is None else self.shortcut(activated))


class ConcatConv2d(nn.Conv2d):
    """A 3x3 conv (with bias) of [t, h]: the time enters as one more constant input channel."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels + 1, channels, 3, padding=1)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(torch.cat([torch.ones_like(h[:, :1]) * t, h], 1))


class ODEFunc(nn.Module):
    """f(h(t), t, θ) = GN(cconv(t, ReLU(GN(cconv(t, ReLU(GN(h))))))): the block's derivative."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = norm(channels)
        self.conv1 = ConcatConv2d(channels)
        self.norm2 = norm(channels)
        self.conv2 = ConcatConv2d(channels)
        self.norm3 = norm(channels)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        out = self.conv1(t, torch.relu(self.norm1(h)))
        return self.norm3(self.conv2(t, torch.relu(self.norm2(out))))


class ODEBlock(nn.Module):
    """h(1) = ODESolve(f, h(0), 0, 1) by torchdiffeq, counting f's evaluations (NFE).

    Args:
        func: f(t, h), an nn.Module (its parameters are the adjoint's).
        method: an adaptive solver (dopri5, ...: rtol, atol apply) or a fixed-grid one (euler,
            midpoint, rk4: `steps` equal steps of 1/steps).
        rtol, atol: the adaptive solver's tolerances, > 0 (the adjoint solve uses the same).
        adjoint: gradients by the adjoint method (O(1) memory) rather than backpropagating through
            the solver's operations (RK-Net, O(L̃) memory).
        steps: number of fixed-grid steps; only for fixed-grid methods.
    """

    def __init__(
        self,
        func: nn.Module,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        adjoint: bool = True,
        steps: int | None = None,
    ) -> None:
        super().__init__()
        one_of("method", method, ADAPTIVE + FIXED_GRID)
        for name, tol in (("rtol", rtol), ("atol", atol)):
            if not tol > 0:
                raise ValueError(f"{name}: {tol!r} must be a number > 0")
        if method in FIXED_GRID and (steps is None or steps < 1):
            raise ValueError(f"steps: {steps!r} must be an integer >= 1 for method {method!r}")
        if method in ADAPTIVE and steps is not None:
            raise ValueError(f"steps: only for fixed-grid methods ({', '.join(FIXED_GRID)})")
        self.func = func
        self.method, self.rtol, self.atol, self.adjoint = method, rtol, atol, adjoint
        self.steps = steps or 1
        self.nfe = 0  # every evaluation of f, forward and backward solves alike
        self.nfe_forward = 0  # those made by forward solves

    def dynamics(self, t: Tensor, h: Tensor) -> Tensor:
        self.nfe += 1
        return self.func(t, h)

    def grid(self, func: object, h0: Tensor, t: Tensor) -> Tensor:
        """The fixed-grid solvers' steps: `steps` equal steps from t[0] to t[-1] (the adjoint's
        backward solve included), with only h(0) and h(1) kept as outputs."""
        return torch.linspace(float(t[0]), float(t[-1]), self.steps + 1, dtype=t.dtype)

    def forward(self, h0: Tensor) -> Tensor:
        times = torch.tensor([0.0, 1.0], dtype=h0.dtype, device=h0.device)
        options = {"grid_constructor": self.grid} if self.method in FIXED_GRID else None
        solve, extra = odeint, {}
        if self.adjoint:
            solve, extra = odeint_adjoint, {"adjoint_params": tuple(self.func.parameters())}
        before = self.nfe
        kwargs = {"rtol": self.rtol, "atol": self.atol, "method": self.method, "options": options}
        h1 = solve(self.dynamics, h0, times, **kwargs, **extra)[1]
        self.nfe_forward += self.nfe - before
        return h1

    def metrics(self) -> dict[str, float]:
        """NFE of forward and backward solves since the last call (backward: 0 without adjoint)."""
        out = {
            "nfe_forward": float(self.nfe_forward),
            "nfe_backward": float(self.nfe - self.nfe_forward),
        }
        self.nfe = self.nfe_forward = 0
        return out

    def extra_repr(self) -> str:
        grid = f", steps={self.steps}" if self.method in FIXED_GRID else ""
        tols = f", rtol={self.rtol:g}, atol={self.atol:g}" if self.method in ADAPTIVE else ""
        return f"method={self.method}{tols}{grid}, adjoint={self.adjoint}"


def downsampling(kind: str, in_channels: int, channels: int) -> nn.Sequential:
    """The example's two downsampling layouts: 28 → 26 → 13 → 6 px ("conv") or → 7 px ("res")."""
    one_of("downsampling", kind, DOWNSAMPLINGS)
    stem = nn.Conv2d(in_channels, channels, 3)
    if kind == "res":
        return nn.Sequential(stem, ResBlock(channels, stride=2), ResBlock(channels, stride=2))
    return nn.Sequential(
        stem, norm(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 4, stride=2, padding=1), norm(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 4, stride=2, padding=1),
    )  # fmt: skip


class TableOneNet(nn.Module):
    """Downsampling → feature layers → GN-ReLU → global average pool → FC (every conv row)."""

    def __init__(
        self, features: nn.Module, channels: int, kind: str, in_channels: int, num_classes: int
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels: {channels!r} must be an integer >= 1")
        self.downsampling = downsampling(kind, in_channels, channels)
        self.features = features
        self.norm = norm(channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.norm(self.features(self.downsampling(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


class ResNet(TableOneNet):
    """Table 1's ResNet: `blocks` pre-activation residual blocks (6 in the paper)."""

    def __init__(
        self,
        channels: int = 64,
        blocks: int = 6,
        downsampling: str = "conv",
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        if blocks < 1:
            raise ValueError(f"blocks: {blocks!r} must be an integer >= 1")
        features = nn.Sequential(*(ResBlock(channels) for _ in range(blocks)))
        super().__init__(features, channels, downsampling, in_channels, num_classes)


class ODENet(TableOneNet):
    """Table 1's ODE-Net: one ODE block (dopri5, rtol = atol = 1e-3, adjoint gradients).

    `metrics()` returns the ODE block's forward and backward NFE since the last call.
    """

    def __init__(
        self,
        channels: int = 64,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        adjoint: bool = True,
        steps: int | None = None,
        downsampling: str = "conv",
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        block = ODEBlock(ODEFunc(channels), method, rtol, atol, adjoint, steps)
        super().__init__(block, channels, downsampling, in_channels, num_classes)

    @property
    def block(self) -> ODEBlock:
        return self.features

    def metrics(self) -> dict[str, float]:
        return self.block.metrics()


class RKNet(ODENet):
    """Table 1's RK-Net: the ODE-Net's block, backpropagated through the Runge–Kutta solver's
    operations instead of by the adjoint (memory grows with the NFE: O(L̃))."""

    def __init__(
        self,
        channels: int = 64,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        steps: int | None = None,
        downsampling: str = "conv",
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        super().__init__(
            channels, method, rtol, atol, False, steps, downsampling, in_channels, num_classes
        )


class MLP(nn.Module):
    """Table 1's 1-layer MLP: one hidden layer of 300 ReLU units on the flattened image."""

    def __init__(
        self,
        hidden: int = 300,
        image_size: int = 28,
        channels: int | None = None,
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        # `channels` is the conv rows' width, which a profile sets for every arm: unused here.
        super().__init__()
        self.hidden = nn.Linear(in_channels * image_size * image_size, hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.relu(self.hidden(torch.flatten(x, 1))))
