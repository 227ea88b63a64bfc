"""A paper's `params.yaml`, its schema: the run matrix, the networks, the regime and the profiles.

`Params` is the file's top level (its JSON schema: `schemas/params.schema.json`); the check stage
validates every paper's file with it. A run's settings (`RunSections`: model, data, optim, ...)
are merged repo defaults ← profile ← data set ← network and validated, merged, by
`common.config.resolve`; here each section is a mapping of settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from common.config import (
    DataConfig,
    Matrix,
    OptimConfig,
    ScheduleConfig,
    TrainerConfig,
    WandbConfig,
)
from common.datasets import DATASETS
from common.regime import Regime
from common.schema import Model, validate

Dataset = Literal[*DATASETS]


class RunSections(Model):
    """A run's settings, as a profile, one of its data sets or a network overrides them."""

    model: dict[str, Any] = None  # type: ignore[assignment]  # optional, but never null
    """The network: `class_path` (`module.Class`) and its arguments."""
    select: Literal["last", "lowest_val"] = None  # type: ignore[assignment]
    """The epoch whose test error is reported: the last, or that of lowest validation error."""
    callbacks: dict[str, dict[str, Any]] = None  # type: ignore[assignment]
    """The paper's own training behaviour: name -> {class_path, its arguments}."""
    data: DataConfig = None  # type: ignore[assignment]
    """Split, subset, augmentation and normalisation."""
    optim: OptimConfig = None  # type: ignore[assignment]
    """SGD: batch_size, lr, momentum, nesterov, weight_decay."""
    schedule: ScheduleConfig = None  # type: ignore[assignment]
    """Epochs and the multi-step LR schedule."""
    trainer: TrainerConfig = None  # type: ignore[assignment]
    """Lightning Trainer settings."""
    wandb: WandbConfig = None  # type: ignore[assignment]
    """Weights & Biases logging: mode (offline, online, disabled), project."""


class Profile(RunSections):
    """A protocol (default, smoke, paper): the run's settings and the data sets it runs on."""

    datasets: dict[Dataset, RunSections | None] = Field(min_length=1)
    """The data sets this profile has a protocol for, each with its own overrides."""


class Params(Matrix):
    """A paper's params.yaml."""

    profile: str = "default"
    """The active profile, one of `profiles`."""
    networks: dict[str, RunSections | None]
    """The networks the key table compares, as overrides of the profile's settings."""
    regime: Regime | None = None
    """Where the paper's claim applies, stated before any run (common/regime.py)."""
    profiles: dict[str, Profile] = Field(min_length=1)
    """The protocols: default (a CPU, minutes), smoke (seconds, for the tests), paper."""
    # A paper's own settings, per profile, checked by its checks.py.
    analysis: dict[str, Any] = None  # type: ignore[assignment]
    """The paper's own analysis settings, per profile (checked by its checks.py)."""
    analyses: dict[str, Any] = None  # type: ignore[assignment]
    """The paper's own analysis settings, per profile (checked by its checks.py)."""


def check_params(params: Any) -> Params:
    """`params` (a paper's params.yaml) as `Params`; a ConfigError names the bad field."""
    return validate(Params, params)
