"""`python -m papers.resnets_as_ensembles.analyze`: every analysis of one trained run, a DVC stage.

Rebuilds the network from the run's checkpoint (no retraining), evaluates the lesions and the path
gradients on the first test images, and writes one JSON per analysis — the run's identity (paper,
profile, arm, dataset, seed) plus the analysis' metrics, as training writes run.json — and a
PNG beside it. A ResNet gets all five analyses, a plain net the single-layer deletions.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import ConfigError, DataConfig, load_params, number
from common.datasets import DataError
from common.io import atomic_write_json
from common.results import IDENTITY, run_record
from papers.resnets_as_ensembles import figures, lesion

ANALYSES = ("delete_one", "delete_k", "reorder", "paths")


@dataclass(frozen=True)
class AnalysisConfig:
    """The analyses' sample sizes (params.yaml: analyses.<profile>)."""

    test_images: int = 1000  # single deletions: the first test images
    sweep_images: int = 1000  # k deleted / k swapped: the first test images
    delete_ks: tuple[int, ...] = tuple(range(1, 21))  # Fig. 5a: k = 1 … 20 blocks deleted
    delete_draws: int = 10  # random draws per k
    reorder_ks: tuple[int, ...] = (1, 2, 4, 6, 8, 10)  # Fig. 5b: k random pairs swapped
    reorder_draws: int = 5
    gradient_images: int = 32  # Fig. 6b: the batch fed forward once
    gradient_samples: int = 5  # random choices of k branches per path length k
    effective_mass: float = 0.9  # share of the total gradient the effective band holds

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "effective_mass":
                number(f"analyses.{f.name}", value, minimum=0.01)
                if value > 1:
                    raise ConfigError(f"analyses.{f.name}: {value!r} must be at most 1")
            elif isinstance(value, int):
                number(f"analyses.{f.name}", value, minimum=2 if "draws" in f.name else 1,
                       integer=True)  # fmt: skip
            else:
                for k in value if isinstance(value, list | tuple) else [None]:
                    number(f"analyses.{f.name}", k, minimum=1, integer=True)
                object.__setattr__(self, f.name, tuple(value))


def analysis_config(params: dict[str, Any], profile: str) -> AnalysisConfig:
    """The active profile's settings; a ConfigError names an unknown or bad field."""
    block = (params.get("analyses") or {}).get(profile) or {}
    allowed = [f.name for f in fields(AnalysisConfig)]
    for key in block:
        if key not in allowed:
            raise ConfigError(f"analyses.{profile}.{key}: unknown field (allowed: {allowed})")
    return AnalysisConfig(**block)


def check_ks(model: Any, config: AnalysisConfig, where: str) -> None:
    """ConfigError unless the sweeps fit the network: at most its deletable blocks deleted, at
    most its pairs of same-shape blocks swapped (`where`: the settings and the arm, for the
    message). A plain net has neither sweep."""
    if not lesion.is_residual(model):
        return
    deletable = sum(not u.downsampling for u in lesion.lesion_units(model))
    limits = {
        "delete_ks": (config.delete_ks, deletable, "deletable blocks"),
        "reorder_ks": (config.reorder_ks, len(lesion.swappable_pairs(model)), "swappable pairs"),
    }
    for name, (ks, limit, what) in limits.items():
        if max(ks) > limit:
            raise ConfigError(f"{where.format(name)}: {max(ks)} exceeds the {limit} {what}")


def test_set(data_file: Path, data: DataConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` test images, normalised as in training (no augmentation), and labels."""
    from common.data import ImageDataModule  # Lightning: imported only when a stage runs

    module = ImageDataModule(data_file, data, batch_size=n)
    module.setup()
    return module.on_after_batch_transfer(next(iter(module.val_dataloader()[-1])), 0)


def batches(images: torch.Tensor, labels: torch.Tensor, n: int, size: int = 500) -> list:
    """The first `n` images and labels in batches of `size`."""
    return [(images[i : min(i + size, n)], labels[i : min(i + size, n)]) for i in range(0, n, size)]


def analyze(
    model: Any, images: torch.Tensor, labels: torch.Tensor, config: AnalysisConfig, seed: int
) -> dict[str, dict]:
    """Every analysis that applies to `model` (a ResNet: all; a plain net: single deletions)."""
    c, chance = config, 100.0 * (1 - 1 / model.fc.out_features)
    results = {
        "delete_one": lesion.delete_one(model, batches(images, labels, c.test_images), chance)
    }
    if not lesion.is_residual(model):
        return results
    rng, sweep = np.random.default_rng(seed), batches(images, labels, c.sweep_images)
    results["delete_k"] = lesion.delete_k(model, sweep, c.delete_ks, c.delete_draws, rng, chance)
    results["reorder"] = lesion.reorder(model, sweep, c.reorder_ks, c.reorder_draws, rng)
    n = c.gradient_images
    results["paths"] = {
        **lesion.path_gradients(model, images[:n], labels[:n], c.gradient_samples, rng,
                                c.effective_mass),
        "lengths": lesion.path_lengths(len(model.blocks)),
    }  # fmt: skip
    return results


def write(results: dict[str, dict], identity: dict[str, Any], out: Path) -> None:
    """out/<analysis>.json (identity + metrics) and out/<analysis>.png for each analysis."""
    out.mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        record = {**identity, "analysis": name, **result}
        if name == "paths":
            fig = figures.paths(result["lengths"], [record])
        else:
            fig = getattr(figures, name)([record])
        fig.savefig(out / f"{name}.png", dpi=80, bbox_inches="tight")
        atomic_write_json(out / f"{name}.json", record)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True, help="the paper's params.yaml")
    parser.add_argument("--run", type=Path, required=True, help="a finished run directory")
    parser.add_argument("--data", type=Path, required=True, help="prepared data set (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    args = parser.parse_args(argv)
    try:
        metrics = run_record(args.run)
        if metrics is None:
            raise ConfigError(f"run: {args.run} has no metrics.json (train it first)")
        config = analysis_config(load_params(args.params), metrics["profile"])
        from common.training import load_network  # Lightning: after validation

        model, run_config = load_network(args.run)
        check_ks(model, config, f"analyses.{metrics['profile']}.{{}} (arm {metrics['arm']})")
        n = max(config.test_images, config.sweep_images, config.gradient_images)
        images, labels = test_set(args.data, run_config.data, n)
        identity = {k: metrics[k] for k in IDENTITY} | {"test_images": config.test_images}
        write(analyze(model, images, labels, config, metrics["seed"]), identity, args.out)
    except (ConfigError, DataError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
