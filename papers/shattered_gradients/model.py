"""The Shattered Gradients Problem — Balduzzi et al., 2017 (arXiv 1702.08591): Fig. 1's networks.

Fully connected ReLU nets of `width` units on a scalar input x, measured at initialisation:

    feedforward:  h_1 = ρ(B(W_1 x + b_1)),  h_l = ρ(B(W_l h_{l-1} + b_l)),         l = 2..L
    resnet:       h_0 = W_0 x + b_0,        h_l = h_{l-1} + W_l ρ(B(h_{l-1})) + b_l, l = 1..L
    output:       f(x) = w·h_L + c

ρ is the ReLU; B is batch normalisation (`batch_norm`, its statistics those of the inputs it is
shown: the measurement shows it the whole grid) or the identity. L is `depth`: ReLU layers of
the feedforward net, residual blocks of the resnet. Weights are He-normal, W ~ N(0, 2/fan_in)
(the read-out w ~ N(0, 1/fan_in)); biases ~ U(-1/√fan_in, 1/√fan_in), PyTorch's default.

"Looks linear" initialisation (`looks_linear`, Sec. 6 of the paper): ρ is the concatenated
ReLU, CReLU(z) = [ReLU(z), ReLU(-z)], and the next layer's weights are mirrored, W = [W̃, -W̃]
with W̃ orthogonal, so that W·CReLU(z) = W̃ z: at initialisation the net is linear in x and its
gradient is the same at every input — no shattering — while it trains as a rectifier net.

The degradation pair the paper explains (plain and residual CIFAR nets of He et al. 2015) is
papers/resnet's `CifarResNet`, measured the same way on a line between two images; the trained
arms of params.yaml name it there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

KINDS = ("feedforward", "resnet")


def _he(layer: nn.Linear, gain: float = 2.0) -> nn.Linear:
    """W ~ N(0, gain/fan_in); the bias keeps PyTorch's default, U(-1/√fan_in, 1/√fan_in)."""
    nn.init.normal_(layer.weight, std=math.sqrt(gain / layer.in_features))
    return layer


class CReLU(nn.Module):
    """CReLU(z) = [ReLU(z), ReLU(-z)]: twice the features, the activation of "looks linear"."""

    def forward(self, z: Tensor) -> Tensor:
        return torch.cat([torch.relu(z), torch.relu(-z)], dim=-1)


def mirrored(width: int, bias: bool = True) -> nn.Linear:
    """A layer from CReLU's 2·width features to width, W = [W̃, -W̃] with W̃ orthogonal."""
    layer = nn.Linear(2 * width, width, bias=bias)
    half = torch.empty(width, width)
    nn.init.orthogonal_(half)
    with torch.no_grad():
        layer.weight.copy_(torch.cat([half, -half], dim=1))
    return layer


class ShatteringNet(nn.Module):
    """A fully connected net of Fig. 1 (the module docstring's equations) from R to R.

    Args:
        depth: L, the ReLU layers (feedforward) or residual blocks (resnet), >= 1.
        kind: "feedforward" or "resnet".
        width: units per layer (200 in the paper's Fig. 1).
        batch_norm: batch normalisation before each ReLU.
        looks_linear: the mirrored CReLU initialisation (feedforward, without batch norm).
    """

    def __init__(
        self,
        depth: int,
        kind: str = "feedforward",
        width: int = 200,
        batch_norm: bool = False,
        looks_linear: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth: {depth} must be >= 1")
        if kind not in KINDS:
            raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
        if width < 1:
            raise ValueError(f"width: {width} must be >= 1")
        if looks_linear and (kind != "feedforward" or batch_norm):
            raise ValueError("looks_linear: only for a feedforward net without batch_norm")
        self.kind, self.depth = kind, depth
        norm = (lambda: nn.BatchNorm1d(width)) if batch_norm else nn.Identity
        if looks_linear:  # W_1 on the scalar input, then mirrored layers after each CReLU
            self.inp = _he(nn.Linear(1, width), gain=1.0)
            self.layers = nn.ModuleList(mirrored(width) for _ in range(depth - 1))
            self.act = CReLU()
            self.out = nn.Linear(2 * width, 1)
            nn.init.normal_(self.out.weight, std=1 / math.sqrt(2 * width))
            with torch.no_grad():
                self.out.weight[:, width:] = -self.out.weight[:, :width]
            self.norms = nn.ModuleList(nn.Identity() for _ in range(depth))
            return
        self.inp = _he(nn.Linear(1, width), gain=2.0 if kind == "feedforward" else 1.0)
        self.layers = nn.ModuleList(_he(nn.Linear(width, width)) for _ in range(depth - 1))
        if kind == "resnet":  # W_1..W_L on the branches; W_0 above lifts x to width
            self.layers.append(_he(nn.Linear(width, width)))
        self.norms = nn.ModuleList(norm() for _ in range(depth))
        self.act = nn.ReLU()
        self.out = _he(nn.Linear(width, 1), gain=1.0)

    def forward(self, x: Tensor) -> Tensor:
        """f(x) for a batch of scalars (n, 1) -> (n, 1)."""
        h = self.inp(x)
        if self.kind == "resnet":
            for norm, layer in zip(self.norms, self.layers, strict=True):
                h = h + layer(self.act(norm(h)))
            return self.out(h)
        h = self.act(self.norms[0](h))
        for norm, layer in zip(self.norms[1:], self.layers, strict=True):
            h = self.act(norm(layer(h)))
        return self.out(h)
