"""`python -m papers.shattered_gradients.measure`: the paper's measurements at initialisation, for
every arm and seed of the matrix on one data set, a DVC stage (one process: the nets are small,
a process per run would spend its time starting). Nothing here trains or reads a checkpoint.

1. Fig. 1-3: fully connected nets of width 200 on a 1-D grid (256 points in [-2, 2]), a fresh
   net per depth, with the arm's connectivity — a plain arm: feedforward with and without batch
   norm, and "looks linear" at the deepest depth; a residual arm: resnet with and without batch
   norm. Per depth, the neighbour correlation ρ of the gradients; the decay fitted (shattering.py);
   at the deepest depth, the spectrum's slope (white noise 0, brown -2).
2. The arm's own network (papers/resnet's plain or residual CIFAR net), initialised with the
   run's seed, on images along the segment between two test images: the same measures.

Writes `<out>/<arm>-s<seed>.json` per run: its identity (paper, profile, arm, dataset, seed), as
the trained run's, so common.results joins them; the scalar metrics the key table cites
(checks.METRICS); the curves the notebook draws.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import ConfigError, build_model, load_params, number, resolve
from common.datasets import DATASETS, DataError
from common.io import atomic_write_json
from papers.shattered_gradients import shattering
from papers.shattered_gradients.model import ShatteringNet


@dataclass(frozen=True)
class Settings:
    """The measurements' sizes (params.yaml: analysis.<profile>)."""

    grid: int = 256  # inputs on the 1-D grid
    line_grid: int = 128  # images on each segment between two test images
    span: float = 2.0  # the grid covers [-span, span]
    width: int = 200  # units per layer of the fully connected nets
    depths: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 25, 30, 40, 50)
    floor: float = 0.125  # ρ above this (2/√grid: white noise's spread) enters the halving fit
    lags: int = 32  # autocorrelation lags kept for the notebook
    line_pairs: int = 2  # segments between test images 2k and 2k+1

    def __post_init__(self) -> None:
        for name in ("grid", "line_grid", "width", "lags", "line_pairs"):
            number(f"analysis.{name}", getattr(self, name), minimum=2 if "grid" in name else 1,
                   integer=True)  # fmt: skip
        number("analysis.span", self.span, minimum=1e-6)
        number("analysis.floor", self.floor, minimum=0)
        if not isinstance(self.depths, list | tuple) or len(self.depths) < 2:
            raise ConfigError(f"analysis.depths: {self.depths!r} must list at least 2 depths")
        for depth in self.depths:
            number("analysis.depths", depth, minimum=1, integer=True)
        if list(self.depths) != sorted(set(self.depths)):
            raise ConfigError(f"analysis.depths: {list(self.depths)} must increase strictly")
        object.__setattr__(self, "depths", tuple(self.depths))


def settings(params: dict[str, Any], profile: str) -> Settings:
    """The active profile's settings; a ConfigError names an unknown or bad field."""
    block = (params.get("analysis") or {}).get(profile) or {}
    allowed = [f.name for f in fields(Settings)]
    for key in block:
        if key not in allowed:
            raise ConfigError(f"analysis.{profile}.{key}: unknown field (allowed: {allowed})")
    return Settings(**block)


# The fully connected families measured beside each kind of arm: (name, ShatteringNet arguments).
PLAIN = {"feedforward": {"kind": "feedforward"},
         "feedforward_bn": {"kind": "feedforward", "batch_norm": True}}  # fmt: skip
RESIDUAL = {"resnet": {"kind": "resnet"}, "resnet_bn": {"kind": "resnet", "batch_norm": True}}


def grid_gradients(net: torch.nn.Module, s: Settings) -> np.ndarray:
    """f'(x) over the 1-D grid (scaled by the grid's length, which no measure sees)."""
    ends = torch.tensor([-s.span]), torch.tensor([s.span])
    return shattering.line_gradients(net, *ends, s.grid).numpy()


def sweep(family: dict[str, Any], s: Settings, seed: int) -> dict[str, Any]:
    """ρ per depth of one fully connected family (a fresh net per depth, seeded by depth), the
    fitted decays, and the deepest net's gradients, spectrum slope and autocorrelation."""
    rho, curves = [], {}
    for depth in s.depths:
        torch.manual_seed(seed * 1000 + depth)
        g = grid_gradients(ShatteringNet(depth, width=s.width, **family), s)
        rho.append(shattering.neighbour_correlation(g))
        curves[depth] = g
    deepest = curves[s.depths[-1]]
    return {
        "rho": rho,
        "halving_rate": shattering.halving_rate(list(s.depths), rho, s.floor),
        "power_exponent": shattering.power_exponent(list(s.depths), rho),
        "spectral_slope": shattering.spectral_slope(deepest),
        "autocorrelation": shattering.autocorrelation(deepest, s.lags).tolist(),
        "gradients": {str(d): curves[d].tolist() for d in (s.depths[0], s.depths[-1])},
    }


def looks_linear(s: Settings, seed: int) -> float:
    """ρ of the deepest feedforward net with the "looks linear" initialisation."""
    torch.manual_seed(seed * 1000 + s.depths[-1])
    net = ShatteringNet(s.depths[-1], width=s.width, looks_linear=True)
    return shattering.neighbour_correlation(grid_gradients(net, s))


def test_images(params: dict[str, Any], paper: str, dataset: str,
                data_file: Path) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """The test images the segments join, normalised as the profile trains on them (the same
    for every arm), and their labels."""
    from common.data import ImageDataModule  # Lightning: imported only when the stage runs

    config = resolve(params, paper=paper, arm=params["arms"][0], dataset=dataset, seed=0)
    n = 2 * settings(params, config.profile).line_pairs
    module = ImageDataModule(data_file, config.data, batch_size=n)
    module.setup()
    return module.on_after_batch_transfer(next(iter(module.test_dataloader())), 0)


def image_lines(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                s: Settings) -> list[np.ndarray]:  # fmt: skip
    """Gradients of the start image's class logit along each segment image 2k -> 2k+1."""
    return [
        shattering.line_gradients(net, images[2 * k], images[2 * k + 1], s.line_grid,
                                  output=int(labels[2 * k])).numpy()
        for k in range(s.line_pairs)
    ]  # fmt: skip


def measure(params: dict[str, Any], paper: str, arm: str, dataset: str, seed: int,
            images: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:  # fmt: skip
    """Every measurement of one (arm, data set, seed), on test `images` and their labels: the
    record of the run."""
    config = resolve(params, paper=paper, arm=arm, dataset=dataset, seed=seed)
    s = settings(params, config.profile)
    torch.set_num_threads(config.trainer.threads)
    residual = not config.model.get("plain", False)
    families = RESIDUAL if residual else PLAIN
    sweeps = {name: sweep(family, s, seed) for name, family in families.items()}
    plain_name, bn_name = families  # without, then with batch norm
    bare, bn = sweeps[plain_name], sweeps[bn_name]
    info = DATASETS[dataset]
    torch.manual_seed(seed)
    net = build_model(config.model, info.shape[0], info.num_classes)
    lines = image_lines(net, *images, s)
    record = {
        "paper": paper, "profile": config.profile, "arm": arm, "dataset": dataset, "seed": seed,
        "connectivity": "residual" if residual else "plain",
        "corr_deep": bare["rho"][-1], "corr_deep_bn": bn["rho"][-1],
        "bn_gain": bn["rho"][-1] - bare["rho"][-1],
        "halving_rate": bare["halving_rate"], "halving_rate_bn": bn["halving_rate"],
        "power_exponent": bare["power_exponent"], "power_exponent_bn": bn["power_exponent"],
        "spectral_slope": bare["spectral_slope"], "spectral_slope_bn": bn["spectral_slope"],
        "line_corr": float(np.mean([shattering.neighbour_correlation(g) for g in lines])),
        "line_spectral_slope": float(np.mean([shattering.spectral_slope(g) for g in lines])),
    }  # fmt: skip
    if not residual:
        record["ll_corr_deep"] = looks_linear(s, seed)
        record["ll_gain"] = record["ll_corr_deep"] - bare["rho"][-1]
    return record | {
        "settings": asdict(s), "depths": list(s.depths), "families": sweeps,
        "line_gradients": [g.tolist() for g in lines],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True, help="the paper's params.yaml")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data", type=Path, required=True, help="prepared data set (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the records")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        paper = args.params.resolve().parent.name
        images = test_images(params, paper, args.dataset, args.data)
        for arm, seed in itertools.product(params["arms"], params["seeds"]):
            record = measure(params, paper, arm, args.dataset, seed, images)
            atomic_write_json(args.out / f"{arm}-s{seed}.json", record)
            print(f"{paper}: {arm} on {args.dataset}, seed {seed}, at init: neighbour correlation"
                  f" at depth {record['depths'][-1]} {record['corr_deep']:.3f} (fully connected, "
                  f"{record['connectivity']}), {record['corr_deep_bn']:.3f} with batch norm; "
                  f"{record['line_corr']:.3f} on image lines", flush=True)  # fmt: skip
    except (ConfigError, DataError, ValueError) as err:  # ValueError: a fit without its depths
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
