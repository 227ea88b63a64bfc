"""Where a paper's claim applies: stated in `params.yaml` before any result, checked on the runs.

A claim is tested only in the regime where the paper makes it: a regulariser needs a baseline that
overfits, "deeper is better" needs converged nets. The criterion is written down first and judged
on every finished run of the active profile, never chosen after the outcome:

    regime:
      claim: stochastic depth regularises deep nets trained to (near) zero training error
      criteria:                  # each must hold on every seed of its arms
        - {check: overfits, arms: [constant], max_train_error: 5, min_gap: 10}
        - {check: converged, arms: [plain20, resnet20], last_epochs: 3, tolerance: 1}

- `trained`: final training error ≤ `max_train_error` (%): a network trained to a low error;
- `overfits`: final training error ≤ `max_train_error` (%) and test error − final training error
  ≥ `min_gap` (points);
- `converged`: over the last `last_epochs` epochs, all at the final learning rate (after the last
  drop), the training error moves by ≤ `tolerance` points (max − min); `metric: train_eval_error`
  reads it in evaluation mode (`data.eval_train_epochs` ≥ `last_epochs`), free of batch norm's
  batch-to-batch noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from common.config import ConfigError, choice
from common.results import Run
from common.schema import Model, validate


class _Criterion(Model):
    check: str
    """What must hold: trained, overfits or converged."""
    arms: list[str] = Field(min_length=1)
    """The arms it must hold on, on every seed; each one of the trained `arms`."""


class Trained(_Criterion):
    """Final training error ≤ max_train_error (%): a network trained to a low error."""

    check: Literal["trained"]
    max_train_error: float = Field(ge=0)
    """The highest final training error allowed, in %."""


class Overfits(_Criterion):
    """Final training error ≤ max_train_error (%) and test − final training error ≥ min_gap."""

    check: Literal["overfits"]
    max_train_error: float = Field(ge=0)
    """The highest final training error allowed, in %."""
    min_gap: float = Field(ge=0)
    """The least test error − final training error allowed, in points."""


class Converged(_Criterion):
    """Over the last `last_epochs` epochs, all at the final LR, the training error moves by ≤
    `tolerance` points (max − min)."""

    check: Literal["converged"]
    last_epochs: int = Field(ge=1)
    """How many epochs, at the end, the training error is read over."""
    tolerance: float = Field(ge=0)
    """The most the training error may move over them, in points (max − min)."""
    metric: Literal["train_error", "train_eval_error"] = "train_error"
    """train_eval_error: read in evaluation mode (needs data.eval_train_epochs ≥ last_epochs)."""


Criterion = Annotated[Trained | Overfits | Converged, Field(discriminator="check")]


class Regime(Model):
    """Where the paper's claim applies, stated before any result; judged on every seed."""

    claim: str
    """The paper's claim, in a sentence."""
    criteria: list[Criterion] = Field(min_length=1)
    """Each must hold on every seed of its arms."""


@dataclass(frozen=True)
class Finding:
    """One criterion judged on the runs: its statement, whether it holds, what was observed."""

    text: str
    holds: bool
    observed: str


def check_regime(params: dict[str, Any]) -> None:
    """ConfigError naming the field unless `regime` (optional) is a claim plus valid criteria on
    trained arms."""
    regime = params.get("regime")
    if regime is None:
        return
    validate(Regime, regime, loc=("regime",))
    for i, criterion in enumerate(regime["criteria"]):
        for arm in criterion["arms"]:  # a criterion on an arm that is not trained is never judged
            choice(f"regime.criteria[{i}].arms (trained arms)", arm, params.get("arms") or [])


PLACEHOLDER = "TODO"  # how the scaffold's placeholder claim begins (python -m common.scaffold)


def check_stated(params: dict[str, Any], where: Path) -> None:
    """ConfigError naming `regime` while its claim is still the scaffold's placeholder, outside
    the smoke profile (which checks the wiring and says nothing about the paper)."""
    profile = params.get("profile", "default")
    claim = (params.get("regime") or {}).get("claim", "")
    if profile != "smoke" and str(claim).startswith(PLACEHOLDER):
        raise ConfigError(
            f"regime: still the scaffold's placeholder in {where}; state where the paper's claim "
            f"applies (claim, criteria: common/regime.py) before running the {profile} profile"
        )


def _trained(criterion: dict[str, Any], runs: list[Run]) -> Finding:
    most = criterion["max_train_error"]
    train = [r.metrics["final_train_error"] for r in runs]
    text = f"final training error ≤ {most:g}%"
    return Finding(text, all(t <= most for t in train), f"training error {_list(train)}%")


def _overfits(criterion: dict[str, Any], runs: list[Run]) -> Finding:
    most, gap = criterion["max_train_error"], criterion["min_gap"]
    train = [r.metrics["final_train_error"] for r in runs]
    gaps = [r.metrics["test_error"] - t for r, t in zip(runs, train, strict=True)]
    holds = all(t <= most for t in train) and all(g >= gap for g in gaps)
    text = f"final training error ≤ {most:g}% and test − training error ≥ {gap:g} points"
    observed = f"training error {_list(train)}%, gap {_list(gaps)} points"
    return Finding(text, holds, observed)


def _converged(criterion: dict[str, Any], runs: list[Run]) -> Finding:
    k, tolerance = criterion["last_epochs"], criterion["tolerance"]
    metric = criterion.get("metric", "train_error")
    if any(metric not in run.history for run in runs):
        return Finding(f"{metric} recorded", False, f"no {metric} in the history")
    moves, long_enough, at_final_lr = [], True, True
    for run in runs:
        errors, lrs = run.history[metric][-k:], run.history["lr"][-k:]
        measured = [e for e in errors if not math.isnan(e)]  # NaN: an epoch that did not measure it
        moves.append(max(measured) - min(measured) if measured else math.nan)
        long_enough &= len(measured) == k
        at_final_lr &= len(set(lrs)) == 1
    holds = long_enough and at_final_lr and all(m <= tolerance for m in moves)
    what = "training error" + (" (evaluation mode)" if metric == "train_eval_error" else "")
    text = f"{what} moves ≤ {tolerance:g} points over the last {k} epochs at the final LR"
    observed = f"moves {_list(moves)} points"
    observed += "" if long_enough else f"; fewer than {k} epochs of {metric}"
    observed += "" if at_final_lr else "; the window spans an LR drop"
    return Finding(text, holds, observed)


def _list(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


JUDGES = {"trained": _trained, "overfits": _overfits, "converged": _converged}


def evaluate(regime: dict[str, Any] | None, runs: list[Run]) -> list[Finding]:
    """Each criterion judged per arm and data set on its finished runs (all seeds); [] without a
    regime."""
    findings = []
    datasets = sorted({r.dataset for r in runs if r.finished})
    for criterion in (regime or {}).get("criteria", []):
        judge = JUDGES[criterion["check"]]
        for arm, dataset in ((a, d) for a in criterion["arms"] for d in datasets or ["—"]):
            chosen = [r for r in runs if (r.arm, r.dataset) == (arm, dataset) and r.finished]
            if not chosen:
                findings.append(
                    Finding(f"{arm} on {dataset}: {criterion['check']}", False, "not run")
                )
                continue
            finding = judge(criterion, chosen)
            seeds = ",".join(str(r.seed) for r in chosen)
            text = f"{arm} on {dataset} ({criterion['check']}, seeds {seeds}): {finding.text}"
            findings.append(Finding(text, finding.holds, finding.observed))
    return findings
