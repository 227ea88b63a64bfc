"""Identity Mappings in Deep Residual Networks — He, Zhang, Ren, Sun 2016 (arXiv 1603.05027).

A Residual Unit computes y_l = λ_s·h(x_l) + λ_F·F(x_l), x_{l+1} = f(y_l) (Eq. 1-2). With h and f
both identities the signal goes directly from any unit to any other, forward and backward:

    x_L = x_l + Σ_{i=l}^{L-1} F(x_i),      ∂E/∂x_l = ∂E/∂x_L · (1 + ∂/∂x_l Σ F(x_i))   (Eq. 4-5)

Where the activations sit (Fig. 4, Table 2), for a unit with convs W_1 ... W_k:

    original              x_{l+1} = ReLU(x_l + BN(W_k ... ReLU(BN(W_1 x_l))))
    bn_after_addition     x_{l+1} = ReLU(BN(x_l + W_k ReLU(... ReLU(BN(W_1 x_l)))))
    relu_before_addition  x_{l+1} = x_l + ReLU(BN(W_k ... ReLU(BN(W_1 x_l))))
    relu_only_preact      x_{l+1} = x_l + BN(W_k ReLU(... BN(W_1 ReLU(x_l))))
    full_preact           x_{l+1} = x_l + W_k ReLU(BN(... W_1 ReLU(BN(x_l))))

What sits on the shortcut (Fig. 2, Table 1, on original units), g(x) = σ(W_g x + b_g) a 1x1 conv:

    identity              λ_s = 1,        λ_F = 1
    constant_scaling      λ_s = 0.5,      λ_F = 0.5 (or 1)
    exclusive_gating      λ_s = 1 − g(x), λ_F = g(x)
    shortcut_only_gating  λ_s = 1 − g(x), λ_F = 1
    conv1x1               h = a 1x1 conv (+ BN in a post-activation unit): ResNet's option C
    dropout               λ_s ~ Bernoulli(1 − p) per element while training, 1 − p at test

A pre-activation net (relu_only_preact, full_preact) takes its first unit's activation right after
conv1, before the split into two paths, and adds one after the last addition (Sec. 4.1); a
shortcut that changes the shape (zero-padding or projection) takes the activated input, as the
official code's projection does. CIFAR networks (Sec. 4, Table 3-4): conv 3x3 16, three stages at
32/16/8 px, global average pooling, FC. Basic units (16/32/64 filters, depth 6n+2, option A
zero-padding on dimension increase) or bottlenecks ([1x1 k, 3x3 k, 1x1 4k], k = 16/32/64, depth
9n+2, 1x1 projection on dimension increase, stride in the first 1x1). This file guarantees, with
identity shortcuts, 3 input channels and 10 classes:

    network      units per stage   full_preact   original     paper
    ResNet-110   18 basic           1,727,962    1,727,962    1.7M (Table 4)
    ResNet-164   18 bottleneck      1,703,258    1,704,154    1.7M (Table 4)
    ResNet-1001  111 bottleneck    10,327,706   10,328,602    10.2M (Table 4)

The pre-act ResNet-164 and ResNet-1001 are KaimingHe/resnet-1k-layers' layout, parameter for
parameter. Its ResNet-1001 has 10.33M parameters; the paper's 10.2M is its count without BN's γ and
β (10,178,490).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from papers.resnet.model import (
    CIFAR_WIDTHS,
    BasicBlock,
    Bottleneck,
    ResidualBlock,
    ResNet,
    blocks_per_stage,
    build_stages,
    conv3x3,
    one_of,
    stage_specs,
)

UNITS = (
    "original", "bn_after_addition", "relu_before_addition", "relu_only_preact", "full_preact",
)  # fmt: skip
SHORTCUTS = (
    "identity", "constant_scaling", "exclusive_gating", "shortcut_only_gating", "conv1x1",
    "dropout",
)  # fmt: skip
PREACT_UNITS = ("relu_only_preact", "full_preact")


def bn_order(unit: str) -> str:
    """BN before each conv ("pre": full pre-activation), else after it ("post")."""
    return "pre" if unit == "full_preact" else "post"


def bottleneck_units_per_stage(depth: int) -> int:
    """n of a bottleneck ResNet-(9n+2): 3 stages × n units × 3 layers + conv1 + the FC."""
    if depth < 11 or (depth - 2) % 9:
        raise ValueError(f"depth: {depth} is not of the form 9n+2 for bottlenecks (164, 1001, ...)")
    return (depth - 2) // 9


class Addition(nn.Module):
    """y = λ_s·h(x) + λ_F·F(x): how a unit adds its shortcut h(x) and its branch F(x) (Table 1).

    Args:
        shortcut: one of SHORTCUTS; conv1x1 lives in h itself and adds as the identity does.
        in_channels, out_channels, stride: the unit's, for the gate's 1x1 conv W_g.
        shortcut_scale, residual_scale: λ_s and λ_F of constant_scaling.
        gate_bias: b_g's initial value (Table 1: −6 trains best; 0 to −5 fail).
        shortcut_dropout: p of dropout on the shortcut (0.5 in Table 1).
    """

    def __init__(
        self,
        shortcut: str,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        shortcut_scale: float = 0.5,
        residual_scale: float = 0.5,
        gate_bias: float = -6.0,
        shortcut_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        one_of("shortcut", shortcut, SHORTCUTS)
        self.variant = shortcut
        self.shortcut_scale, self.residual_scale = shortcut_scale, residual_scale
        self.shortcut_dropout = shortcut_dropout
        gated = shortcut in ("exclusive_gating", "shortcut_only_gating")
        self.gate = nn.Conv2d(in_channels, out_channels, 1, stride=stride) if gated else None
        if self.gate is not None:
            nn.init.constant_(self.gate.bias, gate_bias)

    def forward(self, x: Tensor, shortcut: Tensor, residual: Tensor) -> Tensor:
        """x: the unit's input (the gate's); shortcut: h(x); residual: F(x)."""
        if self.variant == "constant_scaling":
            return self.shortcut_scale * shortcut + self.residual_scale * residual
        if self.variant == "dropout":
            # Dropout as Srivastava et al. define it, E[λ_s] = 1 − p: the mask alone while training
            # (torch's F.dropout rescales by 1/(1 − p); undone here), the expectation at test.
            p = self.shortcut_dropout
            return (1 - p) * F.dropout(shortcut, p, self.training) + residual
        if self.gate is not None:
            g = torch.sigmoid(self.gate(x))
            return (1 - g) * shortcut + (g if self.variant == "exclusive_gating" else 1) * residual
        return shortcut + residual

    def extra_repr(self) -> str:
        return f"shortcut={self.variant}"


class ResidualUnit(ResidualBlock):
    """A Residual Unit with its activations placed as `unit` says and its shortcut combined by
    `addition` (the module docstring's equations). Mixed into BasicBlock or Bottleneck, whose
    convs it keeps; BN after each conv (order "post") or before it ("pre", full_preact only).
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        shortcut: nn.Module | None = None,
        order: str = "post",
        preactivate: bool = True,
        *,
        unit: str = "full_preact",
        addition: Callable[..., Addition] = partial(Addition, "identity"),  # noqa: B008 (immutable)
    ) -> None:
        one_of("unit", unit, UNITS)
        if order != bn_order(unit):
            raise ValueError(f"order: {order!r} does not place BN as unit {unit!r} does")
        super().__init__(in_channels, width, stride, shortcut, order, preactivate)
        self.unit = unit
        self.addition = addition(in_channels=in_channels, out_channels=self.out_channels,
                                 stride=stride)  # fmt: skip

    def preactivation(self, x: Tensor) -> Tensor:
        """The activation a pre-activation unit applies first (shared with a shape-changing h)."""
        if self.unit == "relu_only_preact":
            return F.relu(x)
        if self.unit == "full_preact" and self.bn1 is not None:
            return F.relu(self.bn1(x))
        return x  # post-activation, or the first unit: conv1's BN-ReLU already activated x

    def residual(self, x: Tensor) -> Tensor:
        """F(x), x already pre-activated."""
        if self.unit in ("original", "full_preact"):
            return super().residual(x)  # ResNet's post and pre orders
        last = self.num_convs - 1
        for i, (conv, bn) in enumerate(self.layers()):
            if self.unit == "relu_only_preact":
                x = bn(conv(x if i == 0 else F.relu(x)))
                continue
            x = conv(x)
            x = bn(x) if i < last or self.unit == "relu_before_addition" else x
            x = F.relu(x) if i < last or self.unit == "relu_before_addition" else x
        return x

    def after_addition(self, y: Tensor) -> Tensor:
        """f(y): ReLU for the original unit, BN-ReLU with BN after addition, else the identity."""
        if self.unit == "original":
            return F.relu(y)
        if self.unit == "bn_after_addition":
            return F.relu(getattr(self, f"bn{self.num_convs}")(y))
        return y

    def forward(self, x: Tensor) -> Tensor:
        activated = self.preactivation(x)
        clean = isinstance(self.shortcut, nn.Identity)  # the identity keeps x itself
        h = self.shortcut(x if clean else activated)
        return self.after_addition(self.addition(x, h, self.residual(activated)))

    def extra_repr(self) -> str:
        return f"unit={self.unit}"


class BasicUnit(ResidualUnit, BasicBlock):
    """Two 3x3 convs (ResNet-110)."""


class BottleneckUnit(ResidualUnit, Bottleneck):
    """1x1 reduce → 3x3 → 1x1 expand to 4·width, stride in the first 1x1 (ResNet-164, 1001)."""


class PreActResNet(ResNet):
    """CIFAR ResNet-110/164/1001 with any unit of Table 2 and any shortcut of Table 1.

    Args:
        depth: 6n+2 with basic units (110), 9n+2 with bottlenecks (164, 1001).
        unit: where BN and ReLU sit (UNITS); full_preact is the paper's proposal.
        bottleneck: bottleneck units (projection on dimension increase) instead of basic ones
            (zero-padding, ResNet's option A).
        shortcut: what sits on the shortcut (SHORTCUTS); conv1x1 projects on every unit.
        shortcut_scale, residual_scale: λ_s and λ_F of constant_scaling (Table 1: 0.5 and 0.5).
        gate_bias: initial b_g of the gates (Table 1: −6).
        shortcut_dropout: p of dropout on the shortcut (Table 1: 0.5).
        in_channels: 3 for CIFAR, 1 for (Fashion-)MNIST at 28x28.
        num_classes: outputs of the final FC.
    """

    def __init__(
        self,
        depth: int,
        unit: str = "full_preact",
        bottleneck: bool = False,
        shortcut: str = "identity",
        shortcut_scale: float = 0.5,
        residual_scale: float = 0.5,
        gate_bias: float = -6.0,
        shortcut_dropout: float = 0.5,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        one_of("unit", unit, UNITS)
        one_of("shortcut", shortcut, SHORTCUTS)
        n = bottleneck_units_per_stage(depth) if bottleneck else blocks_per_stage(depth)
        form = BottleneckUnit if bottleneck else BasicUnit
        addition = partial(Addition, shortcut, shortcut_scale=shortcut_scale,
                           residual_scale=residual_scale, gate_bias=gate_bias,
                           shortcut_dropout=shortcut_dropout)  # fmt: skip
        option = "C" if shortcut == "conv1x1" else "B" if bottleneck else "A"
        specs = stage_specs(CIFAR_WIDTHS[0], CIFAR_WIDTHS, [n] * 3, form.expansion)
        block = partial(form, unit=unit, addition=addition)
        stages = build_stages(specs, block, option, order=bn_order(unit))
        super().__init__(
            conv3x3(in_channels, CIFAR_WIDTHS[0]), stages, num_classes, order=bn_order(unit)
        )
        if unit == "relu_only_preact":
            self.final_bn = nn.Identity()  # its activation after the last addition: ReLU alone
