"""Issue 29's `long` profile is the default's design at more seeds, read on the whole test set:
its table answers the default's question only while nothing else differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.config import RunConfig, load_params, resolve

PARAMS = load_params(Path(__file__).resolve().parents[1] / "papers/stochastic_depth/params.yaml")


def _run(profile: str, arm: str) -> RunConfig:
    params = {**PARAMS, "profile": profile}
    return resolve(params, paper="stochastic_depth", arm=arm, dataset="fashion_mnist", seed=0)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("arm", PARAMS["networks"])
def test_long_differs_from_default_only_in_its_test_set(arm: str) -> None:
    default, long = (_flat(_run(p, arm).to_dict()) for p in ("default", "long"))
    differing = {k for k in default if default[k] != long[k]}
    assert differing == {"profile", "data.test_size"}
    assert (default["data.test_size"], long["data.test_size"]) == (2000, None)  # None: all 10,000


def test_both_pin_fp32() -> None:
    """Profile 6: the verdict's arithmetic is the same on every CPU class."""
    assert {_run(p, "stochastic").trainer.precision for p in ("default", "long")} == {"32-true"}
