"""papers/numerical_stacking/sweep.py's analysis on runs made up here (no training): the claims'
measures on each kind's reference arm, the cells' means and diverged fractions, the grid and
divergence-rule checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from common.config import ConfigError
from common.results import Run
from papers.numerical_stacking import sweep

PARAMS = Path(__file__).resolve().parents[1] / "papers" / "numerical_stacking" / "params.yaml"


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def made_up_runs(params: dict) -> list[Run]:
    """Euler's test error 5 points higher with the downsample in the block; at the top rate Euler
    diverges (90% training error, a NaN loss on seed 0), every other run ends at 30%."""
    cells = sweep.check_grid(params)
    top = max(c.lr for c in cells.values())
    runs = []
    for arm, cell in cells.items():
        for seed in params["seeds"]:
            euler_top = cell.kind == "euler" and cell.lr == top
            test = 20.0 + seed + (5.0 if cell.kind == "euler" and cell.placement == "block" else 0)
            metrics = {"profile": params["profile"], "test_error": test,
                       "final_train_error": 90.0 if euler_top else 30.0}  # fmt: skip
            loss = math.nan if euler_top and seed == 0 else 0.5
            runs.append(Run(arm, "fashion_mnist", seed, {"train_loss": [1.0, loss]}, metrics))
    return runs


def test_claims_measures_and_cells(params: dict, tmp_path: Path) -> None:
    table = sweep.analyze(params, made_up_runs(params), tmp_path)
    record = json.loads((tmp_path / "euler_stem_lr3.2-fashion_mnist-s1.json").read_text())
    assert record["placement_swing"] == pytest.approx(5.0)
    assert record["top_lr_train_error"] == pytest.approx(90.0)
    assert (record["arm"], record["seed"], record["profile"]) == ("euler_stem_lr3.2", 1, "default")
    rk4 = json.loads((tmp_path / "rk4_stem_lr3.2-fashion_mnist-s2.json").read_text())
    assert rk4["placement_swing"] == 0 and rk4["top_lr_train_error"] == pytest.approx(30.0)
    assert len(list(tmp_path.glob("*_stem_lr3.2-*.json"))) == 6 * 3  # a record per kind and seed
    cell = next(c for c in table if c["arm"] == "euler_block_lr0.05")
    assert cell["test_error_mean"] == pytest.approx(26.0) and cell["seeds"] == 3
    assert cell["test_error_std"] == pytest.approx(1.0) and cell["diverged_fraction"] == 0
    diverging = next(c for c in table if c["arm"] == "euler_stem_lr3.2")
    assert diverging["diverged_fraction"] == 1  # ≥ 80% training error on every seed
    assert "| fashion_mnist | euler | stem |" in (tmp_path / "cells.md").read_text()


def test_a_missing_run_leaves_its_kind_without_a_record(params: dict, tmp_path: Path) -> None:
    runs = [r for r in made_up_runs(params) if (r.arm, r.seed) != ("rk2_block_lr0.2", 0)]
    sweep.analyze(params, runs, tmp_path)
    assert not (tmp_path / "rk2_stem_lr3.2-fashion_mnist-s0.json").exists()
    assert (tmp_path / "rk2_stem_lr3.2-fashion_mnist-s1.json").exists()


def test_diverged_reads_a_nan_loss_or_the_rule() -> None:
    def run(loss: float, error: float) -> Run:
        return Run("a", "d", 0, {"train_loss": [loss]}, {"final_train_error": error})

    assert sweep.diverged(run(math.nan, 10.0), 80)
    assert sweep.diverged(run(0.3, 85.0), 80)
    assert not sweep.diverged(run(0.3, 79.0), 80)


def test_an_incomplete_grid_is_an_error_naming_arms(params: dict) -> None:
    broken = {**params, "arms": [a for a in params["arms"] if a != "lm_block_lr0.8"]}
    with pytest.raises(ConfigError, match=r"^arms: no arm for .*'lm'.*'block'.*0\.8"):
        sweep.check_grid(broken)
    twice = {**params, "networks": {**params["networks"], "lm_block_lr0.8": {
        "model": {"stacking": "lm", "placement": "block"}, "optim": {"lr": 0.2}}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"^arms: \[.*\] are the same cell"):
        sweep.check_grid(twice)


def test_the_divergence_rule_is_required(params: dict) -> None:
    with pytest.raises(ConfigError, match=r"^analysis\.default: missing"):
        sweep.diverged_train_error({**params, "analysis": {}})
    bad = {**params, "analysis": {"default": {"diverged_train_error": 120}}}
    with pytest.raises(ConfigError, match=r"^analysis\.default\.diverged_train_error: 120"):
        sweep.diverged_train_error(bad)
