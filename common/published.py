"""A paper's `published.yaml`, validated on load: what the paper reports and how ours is measured.

Each row's `ours` has one of four kinds, told apart by its keys:
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
from numbers import Real
from pathlib import Path
from typing import Any

from common.config import ConfigError, choice, load_yaml
from common.datasets import DATASETS

ROW_KEYS = ("id", "name", "source", "published", "direction", "unit", "tolerance", "statistic")
KINDS: dict[str, tuple[set[str], set[str]]] = {  # kind: (required keys, optional keys)
    "value": ({"metric", "arm", "dataset"}, set()),
    "difference": ({"metric", "difference", "dataset"}, set()),
    "saving": ({"metric", "saving", "dataset"}, set()),
    "count": ({"model", "stat", "input_shape", "num_classes"}, {"scale"}),
}
STATISTICS = ("best", "median", "mean")


def ours_kind(ours: dict[str, Any]) -> str:
    """value, difference, saving or count, from the keys of a row's `ours`."""
    for kind in ("count", "difference", "saving"):
        if kind in ours or (kind == "count" and "stat" in ours):
            return kind
    return "value"


def _check_ours(where: str, ours: Any) -> None:
    if not isinstance(ours, dict):
        raise ConfigError(f"{where}.ours: must be a mapping (kinds: {', '.join(KINDS)})")
    kind = ours_kind(ours)
    required, optional = KINDS[kind]
    for key in sorted(set(ours) - required - optional):
        allowed = ", ".join(sorted(required | optional))
        raise ConfigError(f"{where}.ours.{key}: unknown key for a {kind} row (allowed: {allowed})")
    for key in sorted(required - set(ours)):
        raise ConfigError(f"{where}.ours.{key}: missing (a {kind} row needs {sorted(required)})")
    if kind in ("difference", "saving") and not (
        isinstance(ours[kind], list) and len(ours[kind]) == 2
    ):
        raise ConfigError(f"{where}.ours.{kind}: must be two arms [a, b]")
    if kind == "count":
        choice(f"{where}.ours.stat", ours["stat"], ("params", "macs"))
        if "class_path" not in (ours["model"] or {}):
            raise ConfigError(f"{where}.ours.model.class_path: missing")
        if not isinstance(ours["num_classes"], int) or ours["num_classes"] < 1:
            raise ConfigError(f"{where}.ours.num_classes: {ours['num_classes']!r} must be >= 1")


def _check_row(where: str, row: Any) -> None:
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: must be a mapping with keys {', '.join(ROW_KEYS)}, ours")
    for key in row:
        if key not in (*ROW_KEYS, "ours"):
            raise ConfigError(f"{where}.{key}: unknown key (allowed: {', '.join(ROW_KEYS)}, ours)")
    for key in ("id", "name", "source", "ours"):
        if key not in row:
            raise ConfigError(f"{where}.{key}: missing")
    if ("published" in row) == ("direction" in row):
        raise ConfigError(f"{where}: give exactly one of published (a number) or direction")
    if "published" in row and not isinstance(row["published"], Real):
        raise ConfigError(f"{where}.published: {row['published']!r} is not a number")
    if "direction" in row:
        choice(f"{where}.direction", row["direction"], ("higher", "lower"))
    tolerance = row.get("tolerance", 0.0)
    if not isinstance(tolerance, Real) or tolerance < 0:
        raise ConfigError(f"{where}.tolerance: {tolerance!r} must be a number >= 0")
    if "statistic" in row:
        choice(f"{where}.statistic", row["statistic"], STATISTICS)
    _check_ours(where, row["ours"])


def load_published(path: Path) -> dict[str, Any]:
    """`published.yaml` as {title, rows}, every row checked; a ConfigError names the bad field."""
    published = load_yaml(path, "paper") or {}
    if not isinstance(published, dict):
        raise ConfigError(f"published.yaml: {path} must hold a mapping with `title` and `rows`")
    for key in published:
        choice("published.yaml key", key, ("title", "rows"))
    if not isinstance(published.get("title"), str) or not isinstance(published.get("rows"), list):
        raise ConfigError("published.yaml: needs a `title` (text) and `rows` (a list)")
    ids = [row.get("id") if isinstance(row, dict) else None for row in published["rows"]]
    for i, row in enumerate(published["rows"]):
        _check_row(_where(i, row), row)
        if ids.count(ids[i]) > 1:
            raise ConfigError(f"{_where(i, row)}.id: {ids[i]!r} is used by more than one row")
    return published


def _where(i: int, row: Any) -> str:
    name = row.get("id") if isinstance(row, dict) else None
    return f"published.yaml rows[{i}]" + (f" ({name})" if name else "")


def check_rows(published: dict[str, Any], networks: Collection[str], metrics: Collection[str]):
    """ConfigError naming the row and field whose arm is not one of the paper's `networks`, whose
    metric no run or analysis writes, or whose data set is unknown: each would otherwise read
    "not run in this profile" in the table."""
    for i, row in enumerate(published["rows"]):
        ours, where = row["ours"], f"{_where(i, row)}.ours"
        kind = ours_kind(ours)
        if kind == "count":
            continue
        choice(f"{where}.metric", ours["metric"], metrics)
        if ours["dataset"] != "*":
            choice(f"{where}.dataset", ours["dataset"], DATASETS)
        for arm in [ours["arm"]] if kind == "value" else ours[kind]:
            choice(f"{where}.{'arm' if kind == 'value' else kind}", arm, networks)
