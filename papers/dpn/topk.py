"""`python -m papers.dpn.topk`: top-1 and top-5 error of every finished run on its whole test
set, a DVC stage (the paper reports both; training records top-1 only).

Rebuilds each network from its run's checkpoint (no retraining), evaluates it on the run's test
split, normalised as in training, and writes one JSON per run to the output folder — the run's
identity (paper, profile, arm, dataset, seed) plus `top1_error` and `top5_error` in % — which
the key table reads as the run's analysis (papers/dpn/checks.py METRICS). One process for every
run: importing torch and Lightning costs more than evaluating 1,000 images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from common.config import ConfigError
from common.datasets import DataError
from common.io import atomic_write_json
from common.results import IDENTITY, run_record

KS = (1, 5)


def topk_correct(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = KS) -> dict[int, int]:
    """How many labels are among the k highest logits, for each k (k capped at the classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {k: int(hits[:, :k].any(dim=1).sum()) for k in ks}


@torch.no_grad()
def topk_errors(model: nn.Module, batches: Any, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """`top{k}_error` in % over every (images, labels) batch, and the number of images."""
    correct, n = dict.fromkeys(ks, 0), 0
    for images, labels in batches:
        for k, c in topk_correct(model(images), labels, ks).items():
            correct[k] += c
        n += len(labels)
    if n == 0:
        raise ConfigError("data: the test split is empty")
    return {f"top{k}_error": 100.0 * (1 - correct[k] / n) for k in ks} | {"topk_images": n}


def test_batches(run_config: Any, data_file: Path) -> Any:
    """The run's test split, batch by batch, transformed as in evaluation during training."""
    from common.training import data_module  # Lightning: imported only when a stage runs

    module = data_module(run_config, data_file)
    module.setup("test")
    for i, batch in enumerate(module.test_dataloader()):
        yield module.on_after_batch_transfer(batch, i)


def evaluate_run(run: Path, data_dir: Path, out: Path) -> None:
    """out/<run name>.json: the run's identity and its top-k errors."""
    from common.training import load_network  # Lightning: only once a run is there

    metrics = run_record(run)
    if metrics is None:
        raise ConfigError(f"run: {run} has no metrics.json (train it first)")
    model, run_config = load_network(run)
    errors = topk_errors(model, test_batches(run_config, data_dir / f"{metrics['dataset']}.pt"))
    atomic_write_json(out / f"{run.name}.json", {k: metrics[k] for k in IDENTITY} | errors)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="the paper's runs/ folder")
    parser.add_argument("--data-dir", type=Path, required=True, help="the prepared data sets")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write to")
    args = parser.parse_args(argv)
    try:
        runs = sorted(p.parent for p in args.runs.glob("*/metrics.json"))
        if not runs:
            raise ConfigError(f"runs: no finished run in {args.runs} (train first)")
        args.out.mkdir(parents=True, exist_ok=True)
        for run in runs:
            evaluate_run(run, args.data_dir, args.out)
    except (ConfigError, DataError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
