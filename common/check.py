"""`python -m common.check papers/<paper>`: a paper's whole configuration checked in seconds.

It is the first stage of every paper's pipeline: every training and analysis stage depends on the
file it writes, so `dvc repro` stops on a bad setting before it trains anything, and before DVC
deletes any finished run's outputs to re-run its stage. It checks every run of the matrix
(params.yaml over the root params.yaml) and its trainer settings against this machine, every row
of published.yaml against the paper's networks and the metrics its runs and analyses write, the
regime, and the paper's own settings: `papers/<paper>/checks.py`, where a paper has analyses, holds
`METRICS` (the metrics they write) and `check(params)` (their settings), both optional. A bad
setting is one line `error: <field>: ...` and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from common.config import (
    ConfigError,
    check_machine,
    check_matrix,
    load_params,
    resolve,
)
from common.params import check_params
from common.published import check_rows, load_published
from common.regime import check_regime, check_stated
from common.results import RUN_METRICS

SHARED = Path("params.yaml")  # the repo-wide trainer and W&B defaults (run from the repo root)
STAMP = Path("results") / "checked.txt"  # the stage's output, the same text at every pass


def paper_checks(paper_dir: Path) -> ModuleType | None:
    """The paper's own `checks` module (papers/<paper>/checks.py), if it has one."""
    if not (Path(paper_dir) / "checks.py").is_file():
        return None
    return importlib.import_module(f"papers.{Path(paper_dir).name}.checks")


def _known(paper_dir: Path, params: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The networks and the metrics a published row may cite: the paper's networks, the run
    metrics and those its analyses write (`checks.METRICS`)."""
    metrics = set(RUN_METRICS) | set(getattr(paper_checks(paper_dir), "METRICS", ()))
    return set(params.get("networks") or {}), metrics


def check_runs(paper_dir: Path, params: dict[str, Any], shared: dict[str, Any]) -> int:
    """Resolve every (arm, data set) of the matrix, its trainer settings against this machine;
    the number of runs."""
    sections = {k: shared[k] for k in ("trainer", "wandb") if k in shared}
    trainers = set()
    for arm, dataset in itertools.product(params["arms"], params["datasets"]):
        config = resolve(
            params, paper=Path(paper_dir).name, arm=arm, dataset=dataset,
            seed=params["seeds"][0], shared=sections,
        )  # fmt: skip
        trainers.add(config.trainer)
    for trainer in trainers:
        check_machine(trainer)
    return len(params["arms"]) * len(params["datasets"]) * len(params["seeds"])


def check_paper(paper_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The paper's params and published rows, checked (not the runs: see `check_runs`)."""
    published = load_published(Path(paper_dir) / "published.yaml")
    params = load_params(Path(paper_dir) / "params.yaml")
    check_matrix(params)
    check_rows(published, *_known(paper_dir, params))
    check_regime(params)
    check_stated(params, Path(paper_dir) / "params.yaml")
    hooks = paper_checks(paper_dir)
    if hooks is not None and hasattr(hooks, "check"):
        hooks.check(params)
    return params, published


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paper_dir", type=Path, help="papers/<paper>")
    parser.add_argument("--shared", type=Path, default=SHARED, help="repo-wide params")
    args = parser.parse_args(argv)
    try:
        params, published = check_paper(args.paper_dir)
        check_params(params)  # the whole file against its schema (common/params.py)
        shared = load_params(args.shared) if args.shared.is_file() else {}
        runs = check_runs(args.paper_dir, params, shared)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    print(
        f"{args.paper_dir}: configuration checked ({params.get('profile', 'default')} profile, "
        f"{runs} runs, {len(published['rows'])} published rows)"
    )
    stamp = args.paper_dir / STAMP
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(f"{args.paper_dir.name}: configuration checked by common.check\n")


if __name__ == "__main__":
    main()
