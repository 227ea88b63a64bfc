"""Peak training memory of the feature layers at L blocks or RK4 steps (Table 1's memory column).

Each figure is the rise of the process's peak resident set (Linux VmHWM, reset before the step)
over its resident set before it. That counts a step's buffers only if glibc maps each one on its
own, so that a freed tensor's pages leave the process and a new one's are counted: the process
must start with MALLOC_MMAP_THRESHOLD_ set (`MMAP_ENV`), as papers/node/dvc.yaml starts it.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from papers.node.model import ODENet, ResNet, RKNet

MEMORY_ARMS = ("resnet", "rk_net", "ode_net")
MMAP_THRESHOLD = 65536  # bytes: glibc maps every buffer this large or larger on its own
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
FEATURE_SIZE = 6  # the feature layers' input: 28x28 images downsampled twice


def min_batch_size(channels: int) -> int:
    """The smallest batch whose activations (fp32) glibc maps on their own, so they are counted."""
    return math.ceil(MMAP_THRESHOLD / (4 * channels * FEATURE_SIZE**2))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_mib(step: Callable[[], Any]) -> float:
    """MiB that the process's resident set rises by at the peak of `step()` (Linux only)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    step()
    return (_status_kib("VmHWM") - before) / 1024


def feature_layers(arm: str, length: int, channels: int) -> nn.Module:
    """The part of the network that Table 1's memory column is about, at L = `length`: the
    residual blocks, or the ODE block (the downsampling and the head add a constant)."""
    if arm == "resnet":
        return ResNet(channels, blocks=length).features
    solver = {"method": "rk4", "steps": length}
    return (RKNet if arm == "rk_net" else ODENet)(channels, **solver).features


def training_step_mib(arm: str, length: int, channels: int, batch_size: int, seed: int) -> float:
    """Peak memory of one forward + backward step of the feature layers (initialised by `seed`)
    on their 6x6 input, kernels and gradients warmed up first."""
    torch.manual_seed(seed)
    layers = feature_layers(arm, length, channels)

    def step(n: int) -> None:
        h = torch.randn(n, channels, FEATURE_SIZE, FEATURE_SIZE, requires_grad=True)
        layers(h).square().mean().backward()

    step(2)  # first-call allocations (kernels, .grad buffers) are not activations
    return peak_mib(lambda: step(batch_size))
