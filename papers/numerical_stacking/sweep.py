"""`python -m papers.numerical_stacking.sweep train|analyze`: the learning-rate sweep's two stages.

train: every arm × seed on one data set in this one process, one after the other, each as
    `common.train` runs one (its banner, common.training.fit, its run folder
    `runs/<arm>-<dataset>-s<seed>/`), then `results/trained/<dataset>.json` (what was trained):
    the nets are small, and a process per run would spend most of the sweep starting. An
    interrupted sweep resumes each run from its last checkpoint; a finished run trains nothing.
analyze: per cell (kind, placement, learning rate, data set) the test and final training error
    over the seeds and the fraction of seeds that diverged (`diverged_train_error`, stated in
    params.yaml before the runs) → `results/sweep/cells.json`, `cells.md`; per kind and seed the
    claims' measures, joined to the run of its reference arm (the stem placement at the top
    rate) → `results/sweep/<run>.json` (common.results):
    - placement_swing: the mean over the rates of |test error(stem) − test error(block)|;
    - top_lr_train_error: the mean over the placements of the final training error at the
      sweep's highest rate.
A kind is a stacking, `euler_x2`/`euler_x4` for Euler with 2x/4x the blocks (equal multiply-adds).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.config import ConfigError, check_machine, load_params, number, resolve
from common.datasets import DataError
from common.io import BusyError, atomic_write_json, atomic_write_text, exclusive, remove_leftovers
from common.results import Run, load_runs, run_name
from common.train import _shared, _train, banner, writer_lock

PAPER_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Cell:
    """Where an arm sits in the sweep."""

    kind: str
    placement: str
    lr: float


def cell_of(params: dict[str, Any], arm: str, dataset: str) -> Cell:
    """The arm's kind, placement and learning rate, from its resolved configuration."""
    config = resolve(params, paper=PAPER_DIR.name, arm=arm, dataset=dataset, seed=0)
    model = config.model
    multiple = int(model.get("block_multiple", 1))
    kind = model.get("stacking", "euler") + (f"_x{multiple}" if multiple > 1 else "")
    return Cell(kind, model.get("placement", "stem"), config.optim.lr)


def diverged_train_error(params: dict[str, Any]) -> float:
    """The stated rule: a run whose final training error reaches this (%) diverged."""
    profile = params.get("profile", "default")
    settings = (params.get("analysis") or {}).get(profile)
    if not isinstance(settings, dict):
        raise ConfigError(f"analysis.{profile}: missing (the sweep's settings per profile)")
    value = settings.get("diverged_train_error")
    number(f"analysis.{profile}.diverged_train_error", value, minimum=0)
    if value > 100:
        raise ConfigError(f"analysis.{profile}.diverged_train_error: {value} must be <= 100")
    return float(value)


def check_grid(params: dict[str, Any]) -> dict[str, Cell]:
    """Every arm's cell; ConfigError unless each kind has both placements at every rate, once."""
    arms, dataset = params.get("arms") or [], (params.get("datasets") or ["fashion_mnist"])[0]
    cells = {arm: cell_of(params, arm, dataset) for arm in arms}
    seen = defaultdict(list)
    for arm, cell in cells.items():
        seen[cell].append(arm)
    for cell, named in seen.items():
        if len(named) > 1:
            raise ConfigError(f"arms: {named} are the same cell {asdict(cell)}")
    kinds, placements, rates = ({getattr(c, f) for c in cells.values()}
                                for f in ("kind", "placement", "lr"))  # fmt: skip
    for cell in itertools.product(sorted(kinds), sorted(placements), sorted(rates)):
        if Cell(*cell) not in seen:
            raise ConfigError(f"arms: no arm for {asdict(Cell(*cell))}: the grid is incomplete")
    return cells


def train(params_file: Path, shared_file: Path | None, dataset: str, data: Path) -> None:
    """Every arm × seed on `dataset`, then `results/trained/<dataset>.json`: what was trained."""
    params = load_params(params_file)
    shared = _shared(load_params(shared_file) if shared_file else {}, params_file.parent)
    runs_dir, trained = params_file.parent / "runs", []
    for arm, seed in itertools.product(params["arms"], params["seeds"]):
        config = resolve(params, paper=PAPER_DIR.name, arm=arm, dataset=dataset, seed=seed,
                         shared=shared)  # fmt: skip
        check_machine(config.trainer)
        out = runs_dir / run_name(arm, dataset, seed)
        with exclusive(writer_lock(out), f"run: {out}"):
            remove_leftovers(data)
            print(f"\n{banner(params, config)}", flush=True)
            _train(config, data, out)
            finish_wandb()
        run = json.loads((out / "run.json").read_text())
        metrics = json.loads((out / "metrics.json").read_text())
        trained.append({"run": out.name, "run_digest": run["run_digest"],
                        "test_error": metrics["test_error"]})  # fmt: skip
    atomic_write_json(params_file.parent / "results" / "trained" / f"{dataset}.json", trained)


def finish_wandb() -> None:
    """End the run's W&B run: the next run of this process would otherwise log into it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def diverged(run: Run, threshold: float) -> bool:
    loss = run.history.get("train_loss", [math.nan])[-1]
    return not math.isfinite(loss) or run.metrics["final_train_error"] >= threshold


def claim_measures(grid: dict[tuple[str, float], Run], rates: list[float]) -> dict[str, float]:
    """One kind and seed's measures of the two claims, from its runs by (placement, rate)."""
    swings = [abs(grid["stem", lr].metrics["test_error"] - grid["block", lr].metrics["test_error"])
              for lr in rates]  # fmt: skip
    top = [grid[p, rates[-1]].metrics["final_train_error"] for p in ("stem", "block")]
    return {
        "placement_swing": statistics.fmean(swings),
        "top_lr_train_error": statistics.fmean(top),
    }


def analyze(params: dict[str, Any], runs: list[Run], out_dir: Path) -> list[dict[str, Any]]:
    """The cells' table and the claims' records (module docstring); returns the cells."""
    cells, threshold = check_grid(params), diverged_train_error(params)
    profile = params.get("profile", "default")
    by_key = {
        (r.arm, r.dataset, r.seed): r for r in runs
        if r.finished and r.metrics.get("profile") == profile and r.arm in cells
        and r.dataset in params["datasets"] and r.seed in params["seeds"]
    }  # fmt: skip
    arm_of = {cell: arm for arm, cell in cells.items()}
    rates = sorted({c.lr for c in cells.values()})
    kinds = sorted({c.kind for c in cells.values()})
    for kind, dataset, seed in itertools.product(kinds, params["datasets"], params["seeds"]):
        grid = {(p, lr): by_key.get((arm_of[Cell(kind, p, lr)], dataset, seed))
                for p in ("stem", "block") for lr in rates}  # fmt: skip
        if all(grid.values()):
            ref = arm_of[Cell(kind, "stem", rates[-1])]
            record = {"paper": PAPER_DIR.name, "profile": profile, "arm": ref,
                      "dataset": dataset, "seed": seed}  # fmt: skip
            record |= claim_measures(grid, rates)  # type: ignore[arg-type]
            atomic_write_json(out_dir / f"{run_name(ref, dataset, seed)}.json", record)
    table = []
    for (arm, cell), dataset in itertools.product(cells.items(), params["datasets"]):
        seeds = [by_key[arm, dataset, s] for s in params["seeds"] if (arm, dataset, s) in by_key]
        if seeds:
            table.append({"arm": arm, **asdict(cell), "dataset": dataset,
                          **cell_stats(seeds, threshold)})  # fmt: skip
    atomic_write_json(out_dir / "cells.json", table)
    atomic_write_text(out_dir / "cells.md", cells_markdown(table, threshold))
    return table


def cell_stats(runs: list[Run], threshold: float) -> dict[str, float]:
    """One cell over its seeds: test and final training error mean ± std, diverged fraction."""
    stats: dict[str, float] = {"seeds": len(runs)}
    for metric in ("test_error", "final_train_error"):
        values = [r.metrics[metric] for r in runs]
        stats[f"{metric}_mean"] = statistics.fmean(values)
        stats[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    stats["diverged_fraction"] = statistics.fmean(diverged(r, threshold) for r in runs)
    return stats


def cells_markdown(table: list[dict[str, Any]], threshold: float) -> str:
    """Test error mean ± std (diverged seeds / seeds) per kind and placement (rows) and rate."""
    rates = sorted({c["lr"] for c in table})
    rows = sorted({(c["dataset"], c["kind"], c["placement"]) for c in table})
    at = {(c["dataset"], c["kind"], c["placement"], c["lr"]): c for c in table}
    lines = [
        "| data set | kind | placement | " + " | ".join(f"LR {r:g}" for r in rates) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in rates) + " |",
    ]
    for row in rows:
        texts = []
        for rate in rates:
            c = at.get((*row, rate))
            texts.append("—" if c is None else (
                f"{c['test_error_mean']:.1f} ± {c['test_error_std']:.1f} "
                f"({round(c['diverged_fraction'] * c['seeds'])}/{c['seeds']})"
            ))  # fmt: skip
        lines.append(f"| {' | '.join(row)} | {' | '.join(texts)} |")
    note = (f"\nTest error (%) mean ± std over seeds (diverged seeds / seeds: final training error "
            f"≥ {threshold:g}% or a non-finite training loss).\n")  # fmt: skip
    return "\n".join(lines) + "\n" + note


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["train", "analyze"])
    parser.add_argument("--params", type=Path, default=PAPER_DIR / "params.yaml")
    parser.add_argument("--shared", type=Path, help="repo-wide params (trainer, wandb)")
    parser.add_argument("--dataset", help="train: the data set")
    parser.add_argument("--data", type=Path, help="train: its prepared file (data/<name>.pt)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    paper_dir = args.params.parent
    try:
        if args.stage == "train":
            if not (args.dataset and args.data):
                sys.exit("error: train: --dataset and --data are required")
            train(args.params, args.shared, args.dataset, args.data)
            return
        params = load_params(args.params)
        out = paper_dir / "results" / "sweep"
        table = analyze(params, load_runs(paper_dir, finished_only=True), out)
        print((out / "cells.md").read_text() if table else "no finished runs")
    except (ConfigError, DataError, BusyError) as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:
        sys.exit("interrupted: each run resumes from its last checkpoint on the next run")


if __name__ == "__main__":
    main()
