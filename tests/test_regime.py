"""The regime criterion: validated up front, judged on hand-made runs."""

from __future__ import annotations

import math

import pytest

from common.config import ConfigError
from common.regime import check_regime, evaluate
from common.results import Run

NETWORKS = {"constant": {}, "stochastic": {}}


def _run(arm: str, seed: int, train: list[float], lr: list[float], test: float) -> Run:
    history = {"epoch": [float(i + 1) for i in range(len(train))], "train_error": train, "lr": lr}
    metrics = {"final_train_error": train[-1], "test_error": test}
    return Run(arm, "fashion_mnist", seed, history, metrics)


def _regime(**criterion) -> dict:
    return {"claim": "a regulariser needs a baseline that overfits", "criteria": [criterion]}


OVERFITS = {"check": "overfits", "arms": ["constant"], "max_train_error": 5, "min_gap": 10}
CONVERGED = {"check": "converged", "arms": ["constant"], "last_epochs": 3, "tolerance": 1.0}


def test_overfitting_baseline_holds_on_every_seed() -> None:
    runs = [_run("constant", s, [30, 10, 1.0], [0.1, 0.1, 0.01], test=15.0) for s in (0, 1, 2)]
    [finding] = evaluate(_regime(**OVERFITS), runs)
    assert finding.holds and "seeds 0,1,2" in finding.text
    assert "gap 14.0/14.0/14.0" in finding.observed


def test_trained_bounds_the_final_training_error() -> None:
    trained = {"check": "trained", "arms": ["constant"], "max_train_error": 20}
    runs = [_run("constant", 0, [60, 15.0], [0.1] * 2, 30.0)]
    assert evaluate(_regime(**trained), runs)[0].holds
    runs.append(_run("constant", 1, [60, 25.0], [0.1] * 2, 30.0))
    [finding] = evaluate(_regime(**trained), runs)
    assert not finding.holds and finding.observed == "training error 15.0/25.0%"


def test_one_seed_outside_the_regime_fails_it() -> None:
    runs = [_run("constant", 0, [30, 1.0], [0.1, 0.1], 15.0),
            _run("constant", 1, [30, 8.0], [0.1, 0.1], 15.0)]  # fmt: skip
    [finding] = evaluate(_regime(**OVERFITS), runs)
    assert not finding.holds
    [small_gap] = evaluate(_regime(**OVERFITS), [_run("constant", 0, [30, 1.0], [0.1] * 2, 9.0)])
    assert not small_gap.holds


def test_converged_needs_a_plateau_at_the_final_lr() -> None:
    flat = _run("constant", 0, [40, 20, 5.0, 4.5, 4.2], [0.1, 0.1, 0.01, 0.01, 0.01], 10.0)
    assert evaluate(_regime(**CONVERGED), [flat])[0].holds
    falling = _run("constant", 0, [40, 20, 9.0, 6.0, 4.2], [0.1, 0.1, 0.01, 0.01, 0.01], 10.0)
    assert not evaluate(_regime(**CONVERGED), [falling])[0].holds
    across_drop = _run("constant", 0, [40, 5.0, 4.9, 4.8], [0.1, 0.1, 0.01, 0.01], 10.0)
    finding = evaluate(_regime(**CONVERGED), [across_drop])[0]
    assert not finding.holds and finding.observed.endswith("; the window spans an LR drop")
    short = _run("constant", 0, [40, 4.8], [0.01, 0.01], 10.0)
    finding = evaluate(_regime(**CONVERGED), [short])[0]
    assert not finding.holds and finding.observed.endswith("; fewer than 3 epochs of train_error")


def test_converged_in_evaluation_mode_reads_that_column() -> None:
    """`metric: train_eval_error`: the same plateau rule on the evaluation-mode training error;
    a run that did not record it (no data.eval_train) does not hold."""
    noisy = _run("constant", 0, [40, 20, 6.0, 4.0, 5.5], [0.1, 0.1, 0.01, 0.01, 0.01], 10.0)
    assert not evaluate(_regime(**CONVERGED), [noisy])[0].holds
    eval_mode = _regime(**CONVERGED, metric="train_eval_error")
    [missing] = evaluate(eval_mode, [noisy])
    assert not missing.holds and missing.observed.startswith("no train_eval_error in the history")
    noisy.history["train_eval_error"] = [math.nan, math.nan, 5.0, 4.8, 4.6]  # the last 3 epochs
    [finding] = evaluate(eval_mode, [noisy])
    assert finding.holds and finding.observed == "moves 0.4 points"
    noisy.history["train_eval_error"] = [math.nan, math.nan, math.nan, 4.8, 4.6]  # only 2
    [finding] = evaluate(eval_mode, [noisy])
    assert not finding.holds and finding.observed.endswith(
        "; fewer than 3 epochs of train_eval_error"
    )
    assert finding.text.endswith("training error (evaluation mode) moves ≤ 1 points over the last "
                                 "3 epochs at the final LR")  # fmt: skip


def test_unfinished_or_missing_arm_does_not_hold() -> None:
    unfinished = Run("constant", "fashion_mnist", 0, {"train_error": [1.0], "lr": [0.1]}, None)
    [finding] = evaluate(_regime(**OVERFITS), [unfinished])
    assert not finding.holds and finding.observed == "not run"
    assert evaluate(None, []) == []


@pytest.mark.parametrize(
    "regime, field",
    [
        ("overfit", "regime:"),
        ({"claim": "x"}, "regime.criteria:"),
        (_regime(**{**OVERFITS, "check": "overfit"}), "regime.criteria[0].check: 'overfit'"),
        (_regime(**{**OVERFITS, "arms": ["constnt"]}), "regime.criteria[0].arms (trained arms): "),
        # Issue 20: a network that is defined but not trained could never meet the criterion.
        (_regime(**{**OVERFITS, "arms": ["stochastic"]}), "regime.criteria[0].arms (trained arms"),
        (_regime(**{**OVERFITS, "min_gap": -1}), "regime.criteria[0].min_gap: -1"),
        (_regime(**{**OVERFITS, "tolerance": 1}), "regime.criteria[0].tolerance: unknown key"),
        (_regime(**{**CONVERGED, "last_epochs": 0}), "regime.criteria[0].last_epochs: 0"),
        (_regime(**{**CONVERGED, "metric": "test_error"}), "regime.criteria[0].metric: 'test_er"),
        (_regime(**{**OVERFITS, "metric": "train_error"}), "regime.criteria[0].metric: unknown"),
    ],
)
def test_bad_regime_is_one_line_naming_the_field(regime, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_regime({"regime": regime, "networks": NETWORKS, "arms": ["constant"]})
    assert str(err.value).startswith(field) and "\n" not in str(err.value)
