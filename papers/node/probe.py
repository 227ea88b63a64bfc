"""Peak training memory of the feature layers at L blocks or RK4 steps (Table 1's memory column).

`python -m papers.node.probe ARM CHANNELS BATCH SEED L...` prints one figure per L. It runs in a
fresh process per arm and seed, started by `papers.node.analysis.memory_series` with glibc told
to map every buffer of 64 KiB or more on its own, so a freed tensor's pages leave the process and
a new one's are counted; it imports only torch and the models, so a process starts in about half
the time.
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from papers.node.model import ODENet, ResNet, RKNet

MEMORY_ARMS = ("resnet", "rk_net", "ode_net")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_mib(step: Callable[[], Any]) -> float:
    """MiB that the process's resident set rises by at the peak of `step()` (Linux only; start
    the process with MALLOC_MMAP_THRESHOLD_ set, as `memory_series` does)."""
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
        h = torch.randn(n, channels, 6, 6, requires_grad=True)
        layers(h).square().mean().backward()

    step(2)  # first-call allocations (kernels, .grad buffers) are not activations
    return peak_mib(lambda: step(batch_size))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("arm", choices=MEMORY_ARMS)
    parser.add_argument("numbers", type=int, nargs="+", help="CHANNELS BATCH SEED L...")
    args = parser.parse_args(argv)
    channels, batch, seed, *series = args.numbers
    for length in series:
        print(training_step_mib(args.arm, length, channels, batch, seed), flush=True)


if __name__ == "__main__":
    main()
