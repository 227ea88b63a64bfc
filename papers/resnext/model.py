"""TODO: the paper's title — authors, year (arXiv id): its network.

TODO: replace this placeholder with the paper's network, named as in the paper. Open this
docstring with the paper's equation, e.g. for a residual unit

    x_{l+1} = ReLU(x_l + F(x_l, W_l))

and the table of variants this file must match (depth → parameters), which a test in
tests/test_resnext_model.py checks.

The contract (papers/README.md): the constructor takes `in_channels` and `num_classes` as keyword
arguments (the data set decides them) plus the paper's own arguments, annotated, which the
profiles and the networks of params.yaml give; a bad value is a ValueError naming the argument.
"""

from __future__ import annotations

from torch import Tensor, nn


class ResnextNet(nn.Module):
    """The placeholder: a 3x3 convolution of `width` channels, batch norm, ReLU, global average
    pooling and a linear classifier."""

    def __init__(self, *, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width: {width} must be >= 1")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
