"""Neural ODEs' measurements beside training: Table 1's memory column and Fig. 3.

`python -m papers.node.analysis memory ...`: peak training memory (one forward + backward step)
against L = residual blocks (ResNet) or fixed-grid RK4 steps (RK-Net, adjoint ODE-Net; NFE = 4L),
L in a series such as 1, 2, 4, 8: O(L) for ResNet and RK-Net, O(1) for the adjoint ODE-Net. The
feature layers are measured alone, on their 6x6 input: in the whole network the backward pass
through the 26x26 downsampling sets a peak of its own that hides them at small L. Every point is
measured by `papers.node.probe`, in this process, which must start with glibc told to map each
large buffer on its own (`MMAP_ENV`, set by papers/node/dvc.yaml).

`python -m papers.node.analysis fig3 ...`: on each trained ODE-Net, at every tolerance of a list,
(a) test error, (b) forward wall time against forward NFE, (c) backward NFE against forward NFE
(one training step per batch, adjoint); (d) NFE over training is the run's history, of which it
writes the growth (forward NFE per step, last epoch − first).

Both write one JSON per (arm, dataset, seed) keyed like a run's run.json (paper,
profile, arm, dataset, seed, then the measurements).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from common.config import ConfigError, load_params, number, resolve
from common.datasets import DataError
from common.io import atomic_write_json
from common.results import read_history, run_name
from papers.node.model import ODENet
from papers.node.probe import MEMORY_ARMS, MMAP_ENV, min_batch_size, training_step_mib


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys on xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def identity(params: dict[str, Any], arm: str, dataset: str, seed: int) -> dict[str, Any]:
    return {
        "paper": "node", "profile": params.get("profile", "default"), "arm": arm,
        "dataset": dataset, "seed": seed,
    }  # fmt: skip


def analysis_settings(params: dict[str, Any], name: str) -> dict[str, Any]:
    """`analysis.<profile>.<name>` of the params, checked."""
    profile = params.get("profile", "default")
    settings = (params.get("analysis") or {}).get(profile, {}).get(name)
    if not isinstance(settings, dict):
        raise ConfigError(f"analysis.{profile}.{name}: missing (a mapping of settings)")
    number(
        f"analysis.{profile}.{name}.batch_size", settings.get("batch_size"), minimum=1, integer=True
    )
    return settings


def memory_settings(params: dict[str, Any]) -> tuple[list[int], int, int]:
    """The memory series' values of L, channels and batch size, checked."""
    settings = analysis_settings(params, "memory")
    series = settings.get("series")
    if not isinstance(series, list) or len(series) < 2:
        raise ConfigError(f"analysis memory.series: {series!r} must list >= 2 values of L")
    for length in series:
        number("analysis memory.series", length, minimum=1, integer=True)
    dataset = params["datasets"][0]
    channels = resolve(params, paper="node", arm="ode_net", dataset=dataset, seed=0).model.get(
        "channels", 64
    )
    batch_size, least = settings["batch_size"], min_batch_size(channels)
    if batch_size < least:
        raise ConfigError(
            f"analysis.{params.get('profile', 'default')}.memory.batch_size: {batch_size} must be "
            f">= {least} at {channels} channels (smaller activations are not counted)"
        )
    return series, channels, batch_size


def fig3_settings(params: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    """Fig. 3's settings and tolerances, checked."""
    settings = analysis_settings(params, "fig3")
    tolerances = settings.get("tolerances")
    if not isinstance(tolerances, list) or not tolerances:
        raise ConfigError(f"analysis fig3.tolerances: {tolerances!r} must be a non-empty list")
    for tol in tolerances:
        if isinstance(tol, bool) or not isinstance(tol, int | float) or tol <= 0:
            raise ConfigError(f"analysis fig3.tolerances: {tol!r} must be a number > 0")
    return settings, tolerances


def run_memory(params: dict[str, Any], out_dir: Path) -> None:
    series, channels, batch_size = memory_settings(params)
    dataset = params["datasets"][0]
    for name, value in MMAP_ENV.items():
        if os.environ.get(name) != value:
            raise ConfigError(f"memory: start the process with {name}={value}, as dvc.yaml does")
    gc.freeze()  # the imports' objects: each measurement's gc.collect() then skips them
    # Once per seed (the layers' initialisation): the table compares the growth against the
    # spread of repeated measurements, as it does for trained metrics.
    for arm, seed in itertools.product(MEMORY_ARMS, params["seeds"]):
        mib = [training_step_mib(arm, n, channels, batch_size, seed) for n in series]
        result = {
            **identity(params, arm, dataset, seed), "series": series, "memory_mib": mib,
            "channels": channels, "batch_size": batch_size,
            "memory_mib_per_l": slope(series, mib), "memory_ratio": mib[-1] / mib[0],
        }  # fmt: skip
        points = ", ".join(f"L={n} {m:.1f} MiB" for n, m in zip(series, mib, strict=True))
        print(f"{arm} s{seed}: {points}", flush=True)
        atomic_write_json(out_dir / f"{run_name(arm, dataset, seed)}.json", result)


def _test_batches(config: Any, data_file: Path, size: int, batch_size: int) -> list[tuple]:
    """The first `size` test images, normalised as the run's training set was."""
    from common.data import ImageDataModule

    data = ImageDataModule(data_file, config.data, batch_size)
    data.setup()
    images, labels = data.test_set.images[:size], data.test_set.labels[:size]
    x = (images.float() / 255 - data.mean) / data.std
    return list(zip(x.split(batch_size), labels.split(batch_size), strict=True))


def tolerance_point(model: ODENet, batches: list[tuple], tol: float) -> dict[str, float]:
    """Test error, forward NFE and wall time per batch, backward NFE per training step."""
    model.block.rtol = model.block.atol = tol
    errors, forward_s, nfe, step_nfe = 0, 0.0, [], []
    model.eval()
    for x, y in batches:
        with torch.no_grad():
            start = time.perf_counter()
            errors += int((model(x).argmax(1) != y).sum())
            forward_s += time.perf_counter() - start
        nfe.append(model.metrics()["nfe_forward"])
        F.cross_entropy(model(x), y).backward()  # eval mode: GroupNorm has no batch statistics
        step_nfe.append(model.metrics())
    model.zero_grad()
    n = sum(len(y) for _, y in batches)
    return {
        "tolerance": tol, "test_error": 100 * errors / n,
        "nfe_forward": statistics.fmean(nfe), "forward_s": forward_s / len(batches),
        "nfe_backward": statistics.fmean(s["nfe_backward"] for s in step_nfe),
    }  # fmt: skip


def run_fig3(params: dict[str, Any], dataset: str, seed: int, data: Path, runs: Path, out: Path):
    """Fig. 3 (a)-(c), and (d)'s growth, on the trained ODE-Net of (dataset, seed)."""
    settings, tolerances = fig3_settings(params)
    config = resolve(params, paper="node", arm="ode_net", dataset=dataset, seed=seed)
    from common.training import load_network  # imports Lightning: not needed for memory

    model, _ = load_network(runs / config.name)
    batches = _test_batches(config, data, settings.get("test_size", 1000), settings["batch_size"])
    points = [tolerance_point(model, batches, tol) for tol in tolerances]
    series = {key: [p[key] for p in points] for key in points[0]}
    trained = points[min(range(len(points)), key=lambda i: abs(tolerances[i] - 1e-3))]
    nfe = read_history(runs / config.name / "history.csv")["train_nfe_forward"]  # Fig. 3d
    result = {
        **identity(params, "ode_net", dataset, seed), **series,
        "test_images": sum(len(y) for _, y in batches),
        "nfe_backward_over_forward": trained["nfe_backward"] / trained["nfe_forward"],
        "seconds_per_nfe": slope(series["nfe_forward"], series["forward_s"]),
        "nfe_growth": nfe[-1] - nfe[0],  # forward NFE per step, last epoch − first
    }  # fmt: skip
    for p in points:
        print(
            f"ode_net {dataset} s{seed}, tol {p['tolerance']:g}: error {p['test_error']:.2f}%, "
            f"NFE {p['nfe_forward']:.1f} forward / {p['nfe_backward']:.1f} backward, "
            f"forward {1000 * p['forward_s']:.0f} ms a batch"
        )
    atomic_write_json(out, result)


def main(argv: list[str] | None = None) -> None:
    """Table 1's memory column (`memory`) or Fig. 3 on one trained ODE-Net (`fig3`)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    memory = commands.add_parser("memory", help="peak training memory against L")
    fig3 = commands.add_parser("fig3", help="Fig. 3 (a)-(c) on a trained ODE-Net")
    for command in (memory, fig3):
        command.add_argument("--params", type=Path, required=True)
        command.add_argument("--out", type=Path, required=True)
    fig3.add_argument("--dataset", required=True)
    fig3.add_argument("--seed", type=int, required=True)
    fig3.add_argument("--data", type=Path, required=True, help="prepared data set (.pt)")
    fig3.add_argument("--runs", type=Path, required=True, help="the runs directory")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        torch.set_num_threads(1)  # wall times comparable on a shared machine
        if args.command == "memory":
            run_memory(params, args.out)
        else:
            run_fig3(params, args.dataset, args.seed, args.data, args.runs, args.out)
    except (ConfigError, DataError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
