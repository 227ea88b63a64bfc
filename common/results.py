"""A paper's results as its pipeline leaves them on disk, for the key table and the notebooks.

`runs/<arm>-<dataset>-s<seed>/` holds `history.csv` (a row per epoch, written as training goes)
and, once finished, `metrics.json`; `results/table.json` and `table.md` hold the key table.
Nothing here imports torch or Lightning: notebooks read results in a second.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def run_name(arm: str, dataset: str, seed: int) -> str:
    """The run directory's name; DVC's `runs/${item.arm}-${item.dataset}-s${item.seed}` spells
    the same (tests/test_pipelines.py checks they agree)."""
    return f"{arm}-{dataset}-s{seed}"


@dataclass(frozen=True)
class Run:
    """One run directory: its identity, its history so far, its metrics once finished."""

    arm: str
    dataset: str
    seed: int
    history: dict[str, list[float]]
    metrics: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.metrics is not None


def read_history(path: Path) -> dict[str, list[float]]:
    """history.csv as columns: {"epoch": [1.0, 2.0, ...], "test_error": [...], ...}."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def _identity(run_dir: Path) -> dict[str, Any] | None:
    """arm, dataset, seed from the run's metrics.json or config.json (never parsed from its name:
    an arm may contain a dash)."""
    for name in ("metrics.json", "config.json"):
        if (run_dir / name).is_file():
            return json.loads((run_dir / name).read_text())
    return None


def load_runs(paper_dir: Path, finished_only: bool = False) -> list[Run]:
    """Every run of the paper with at least one epoch written, sorted by arm, dataset, seed."""
    runs = []
    for history in sorted(Path(paper_dir).glob("runs/*/history.csv")):
        identity, metrics_file = _identity(history.parent), history.parent / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        if identity is None or (finished_only and metrics is None):
            continue
        runs.append(
            Run(identity["arm"], identity["dataset"], int(identity["seed"]),
                read_history(history), metrics)
        )  # fmt: skip
    return sorted(runs, key=lambda r: (r.arm, r.dataset, r.seed))


def load_table(paper_dir: Path) -> dict[str, Any] | None:
    """The key table as `common.table` wrote it (title, rows), or None before it exists."""
    path = Path(paper_dir) / "results" / "table.json"
    return json.loads(path.read_text()) if path.is_file() else None
