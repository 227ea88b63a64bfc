"""A paper's results as its pipeline leaves them on disk, for the key table and the notebooks.

`runs/<arm>-<dataset>-s<seed>/` holds `config.json` (written first), `history.csv` (a row per
epoch, written as training goes) and, once finished, `run.json` (identity and provenance: text)
and `metrics.json` (numbers only, DVC's metrics); `results/table.json` and
`table.md` hold the key table. An analysis of a trained run (lesions, memory, NFE) writes a JSON
anywhere under the paper's `runs/` or `results/`, keyed like metrics.json (paper, profile, arm,
dataset, seed); its scalar metrics join that run's. Nothing here imports torch or Lightning:
notebooks read results in a second.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IDENTITY = ("paper", "profile", "arm", "dataset", "seed")  # the keys of a run's record
RUN_FILES = ("config.json", "run.json", "metrics.json")  # a run folder's own JSON files
# The numbers every training run writes to its metrics.json (common.training.fit), which a key
# table's row may cite; a paper's analyses add theirs (its `checks.METRICS`).
RUN_METRICS = (
    "test_error", "val_error", "final_train_error", "final_test_error", "train_time_s",
    "time_per_epoch_s", "epochs", "steps", "selected_epoch", "train_images", "test_images",
    "test_curve_images", "params", "macs",
)  # fmt: skip

# The cross-paper measures (common.summary's figures, the W&B report's panels, every run's W&B
# summary): metrics.json names, the same in every paper, and their labels.
SUMMARY_METRICS = {
    "test_error": "test error (%)",
    "final_train_error": "training error (%)",
    "train_time_s": "training time (s)",
    "params": "parameters",
    "macs": "multiply-adds",
}


def family(model: dict[str, Any]) -> str:
    """A network's family: the paper folder that defines its class (`papers.wrn.model.WideResNet`
    → `wrn`), so an arm built on another paper's network (DPN's ResNeXt baseline) counts there."""
    module = str(model.get("class_path", "")).split(".")
    return module[1] if len(module) > 2 and module[0] == "papers" else ".".join(module[:-1])


def run_name(arm: str, dataset: str, seed: int) -> str:
    """The run directory's name; DVC's `runs/${item.arm}-${item.dataset}-s${item.seed}` spells
    the same (tests/test_config.py checks they agree)."""
    return f"{arm}-{dataset}-s{seed}"


@dataclass(frozen=True)
class Run:
    """One run directory: its identity, its history so far, its metrics once finished."""

    arm: str
    dataset: str
    seed: int
    history: dict[str, list[float]]
    metrics: dict[str, Any] | None  # metrics.json and its analyses' scalars, once finished

    @property
    def finished(self) -> bool:
        return self.metrics is not None


def read_history(path: Path) -> dict[str, list[float]]:
    """history.csv as columns: {"epoch": [1.0, 2.0, ...], "test_error": [...], ...}."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def _identity(run_dir: Path) -> dict[str, Any] | None:
    """arm, dataset, seed from the run's run.json or config.json (never parsed from its name:
    an arm may contain a dash)."""
    for name in ("run.json", "metrics.json", "config.json"):  # metrics.json: before run.json was
        if (run_dir / name).is_file():
            return json.loads((run_dir / name).read_text())
    return None


def run_record(run_dir: Path) -> dict[str, Any] | None:
    """A finished run's record: run.json (what it is, how it was obtained) and metrics.json (its
    numbers) in one mapping; None while it is unfinished (no metrics.json)."""
    metrics = Path(run_dir) / "metrics.json"
    if not metrics.is_file():
        return None
    return {**(_identity(Path(run_dir)) or {}), **json.loads(metrics.read_text())}


def _key(record: Any) -> tuple | None:
    ok = isinstance(record, dict) and all(k in record for k in IDENTITY)
    return tuple(record[k] for k in IDENTITY) if ok else None


def _analyses(paper_dir: Path) -> dict[tuple, dict[str, Any]]:
    """Scalar metrics of the analyses under the paper's runs/ and results/, by run identity (the
    first file, in path order, to give a metric gives its value)."""
    found: dict[tuple, dict[str, Any]] = {}
    for path in sorted(p for f in ("runs", "results") for p in (paper_dir / f).rglob("*.json")):
        if path.name in RUN_FILES:  # the runs' own files
            continue
        record = json.loads(path.read_text())
        key = _key(record)
        if key is not None:
            scalars = {k: v for k, v in record.items() if isinstance(v, int | float | str)}
            found[key] = scalars | found.get(key, {})
    return found


def load_runs(paper_dir: Path, finished_only: bool = False) -> list[Run]:
    """Every run of the paper with at least one epoch written, sorted by arm, dataset, seed; a
    finished run's metrics gain its analyses' scalar metrics, never replacing one of its own."""
    paper_dir = Path(paper_dir)
    analyses, runs = _analyses(paper_dir), []
    files = ("history.csv", "metrics.json")
    written = {p.parent for f in files for p in paper_dir.glob(f"runs/*/{f}")}
    for run_dir in sorted(written):
        identity, metrics = _identity(run_dir), run_record(run_dir)
        if identity is None or (finished_only and metrics is None):
            continue
        if metrics is not None:
            metrics |= {k: v for k, v in analyses.get(_key(metrics), {}).items()
                        if k not in metrics}  # fmt: skip
        history_file = run_dir / "history.csv"
        history = read_history(history_file) if history_file.is_file() else {}
        runs.append(
            Run(identity["arm"], identity["dataset"], int(identity["seed"]), history, metrics)
        )
    return sorted(runs, key=lambda r: (r.arm, r.dataset, r.seed))


def load_table(paper_dir: Path) -> dict[str, Any] | None:
    """The key table as `common.table` wrote it (title, rows), or None before it exists."""
    path = Path(paper_dir) / "results" / "table.json"
    return json.loads(path.read_text()) if path.is_file() else None
