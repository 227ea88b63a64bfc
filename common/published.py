"""A paper's `published.yaml`, validated on load: what the paper reports and how ours is measured.

`Published` below is the file's schema (its JSON schema: `schemas/published.schema.json`). Each
row's `ours` has one of four kinds, told apart by its keys:
- value:      {metric, arm, dataset} — a run metric over the seeds of one arm;
- difference: {metric, difference: [a, b], dataset} — per seed, metric(a) − metric(b);
- saving:     {metric, saving: [a, b], dataset} — per seed, 100 · (1 − metric(a) / metric(b));
- count:      {model: {class_path, ...}, stat: params | macs, input_shape, num_classes[, scale]}
              — counted on the network.
`dataset: "*"` repeats a row for every data set the active profile ran. A row gives `published`
(a number) or, where the paper has only a figure, `direction: higher | lower`. Any other key is an
error, so a misspelt `tolerance` cannot silently become 0.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, model_validator

from common.config import ConfigError, choice, load_yaml
from common.datasets import DATASETS
from common.schema import Model, validate


def ours_kind(ours: Any) -> str:
    """value, difference, saving or count, from the keys of a row's `ours`."""
    if not isinstance(ours, dict):
        return "value"  # not a mapping: the value kind says so, listing its keys
    for kind in ("count", "difference", "saving"):
        if kind in ours or (kind == "count" and "stat" in ours):
            return kind
    return "value"


class _Measured(Model):
    metric: str
    """A metric each run writes (test_error, final_train_error, …) or the paper's analyses do."""
    dataset: Literal["*", *DATASETS]
    """The data set; `*` repeats the row for every data set the active profile ran."""


class Value(_Measured):
    """A run metric over the seeds of one arm."""

    arm: str
    """One of the paper's `networks`."""


class Difference(_Measured):
    """Per seed, metric(a) − metric(b)."""

    difference: list[str] = Field(min_length=2, max_length=2)
    """Two arms [a, b]: per seed, metric(a) − metric(b)."""


class Saving(_Measured):
    """Per seed, 100 · (1 − metric(a) / metric(b))."""

    saving: list[str] = Field(min_length=2, max_length=2)
    """Two arms [a, b]: per seed, 100 · (1 − metric(a) / metric(b))."""


class Network(Model):
    """A network to count: its class and, as further keys, its arguments."""

    model_config = ConfigDict(extra="allow")
    class_path: str
    """The network's class, `module.Class`."""


class Count(Model):
    """Counted on the network, not trained."""

    model: Network
    stat: Literal["params", "macs"]
    """Parameters, or multiply-adds of one forward pass."""
    input_shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=2)
    """The input's shape [batch, channels, height, width]."""
    num_classes: int = Field(ge=1)
    scale: float = 1.0
    """Multiplies the count (1.0e-6: millions)."""


Ours = Annotated[
    Annotated[Value, Tag("value")]
    | Annotated[Difference, Tag("difference")]
    | Annotated[Saving, Tag("saving")]
    | Annotated[Count, Tag("count")],
    Discriminator(ours_kind),
]


class Row(Model):
    """One published number beside ours."""

    # published or direction, for an editor too (the validator below says so to the check stage)
    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["published"]}, {"required": ["direction"]}]}
    )
    id: str
    """Unique in the file; the key table's row id."""
    name: str
    source: str
    """Where the paper gives it (Table 1, Fig. 6)."""
    published: float = None  # type: ignore[assignment]  # optional, but never null
    """The paper's number; where it gives only a figure, `direction` instead."""
    direction: Literal["higher", "lower"] = None  # type: ignore[assignment]
    """The side of zero of the paper's effect, where it gives only a figure."""
    unit: str = ""
    tolerance: float = Field(0.0, ge=0)
    """How far ours may lie from the published number; at least the paper's rounding."""
    statistic: Literal["best", "median", "mean"] = None  # type: ignore[assignment]
    """The statistic over runs the paper reports (mean where it does not say)."""
    ours: Ours
    """How ours is measured: a value, difference, saving or count."""

    @model_validator(mode="after")
    def _published_or_direction(self) -> Row:
        if (self.published is None) == (self.direction is None):
            raise ValueError("give exactly one of published (a number) or direction")
        return self


class Published(Model):
    """A paper's published.yaml: its key table's rows."""

    title: str
    rows: list[Row]


def load_published(path: Path) -> dict[str, Any]:
    """`published.yaml` as {title, rows}, every row checked; a ConfigError names the bad field."""
    published = load_yaml(path, "paper") or {}
    validate(Published, published, where="published.yaml")
    ids = [row["id"] for row in published["rows"]]
    for i, row in enumerate(published["rows"]):
        if ids.count(row["id"]) > 1:
            raise ConfigError(
                f"{_where(i, published)}.id: {row['id']!r} is used by more than one row"
            )
    return published


def _where(i: int, published: dict[str, Any]) -> str:
    return f"published.yaml rows[{i}] ({published['rows'][i]['id']})"


def check_rows(published: dict[str, Any], networks: Collection[str], metrics: Collection[str]):
    """ConfigError naming the row and field whose arm is not one of the paper's `networks` or
    whose metric no run or analysis writes: each would otherwise read "not run in this profile"
    in the table."""
    for i, row in enumerate(published["rows"]):
        ours, where = row["ours"], f"{_where(i, published)}.ours"
        kind = ours_kind(ours)
        if kind == "count":
            continue
        choice(f"{where}.metric", ours["metric"], metrics)
        for arm in [ours["arm"]] if kind == "value" else ours[kind]:
            choice(f"{where}.{'arm' if kind == 'value' else kind}", arm, networks)
