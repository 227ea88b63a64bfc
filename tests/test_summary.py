"""The cross-paper summary (issue 26): `python -m common.summary` over what papers have."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nbformat
import pytest
import yaml

from common import summary
from common.results import SUMMARY_METRICS
from common.table import VERDICTS

REPO = Path(__file__).resolve().parents[1]
WITH_TABLE, WITHOUT = ("wrn", "lm_resnet"), ("resnext",)  # lm_resnet: two families (its baseline)


def _table(paper: str) -> dict:
    rows = [
        {"id": f"{paper}_{i}", "name": f"row {i}", "published": "lower", "unit": " pts",
         "statistic": None, "ours": None, "how": "", "verdict": verdict}
        for i, verdict in enumerate([*VERDICTS, VERDICTS[0]])
    ]  # fmt: skip
    return {"title": paper, "rows": rows, "regime": {"holds": True, "claim": "", "findings": []}}


def _runs(paper_dir: Path) -> None:
    """Two finished seeds of each default-profile arm, with made-up numbers."""
    params = yaml.safe_load((paper_dir / "params.yaml").read_text())
    default = params["profiles"]["default"]
    for arm in params["arms"]:
        spec = {**default.get("model", {}), **params["networks"][arm].get("model", {})}
        for seed in (0, 1):
            run = paper_dir / "runs" / f"{arm}-fashion_mnist-s{seed}"
            run.mkdir(parents=True)
            identity = {"paper": paper_dir.name, "profile": "default", "arm": arm,
                        "dataset": "fashion_mnist", "seed": seed,
                        "family": summary.family(spec)}  # fmt: skip
            (run / "run.json").write_text(json.dumps(identity))
            numbers = {m: 10.0 + seed for m in SUMMARY_METRICS}
            (run / "metrics.json").write_text(json.dumps(numbers))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three papers' folders (their params, published rows and counts): two with a table and
    runs, one without results."""
    root = tmp_path_factory.mktemp("repo")
    for paper in (*WITH_TABLE, *WITHOUT):
        folder = root / "papers" / paper
        folder.mkdir(parents=True)
        for name in ("params.yaml", "published.yaml", summary.COUNTS):
            if (REPO / "papers" / paper / name).is_file():  # COUNTS: a paper with counted points
                shutil.copy2(REPO / "papers" / paper / name, folder / name)
    for paper in WITH_TABLE:
        (root / "papers" / paper / "results").mkdir()
        (root / "papers" / paper / "results" / "table.json").write_text(json.dumps(_table(paper)))
        _runs(root / "papers" / paper)
    return root


@pytest.fixture(scope="module")
def gathered(root: Path) -> dict:
    return summary.gather(root)


def test_lists_exactly_the_papers_with_tables_and_names_the_others(gathered: dict) -> None:
    assert gathered["papers"] == sorted(WITH_TABLE)
    assert gathered["missing"] == list(WITHOUT)
    assert "No results yet (run `dvc repro papers/<paper>`): resnext." in summary.to_markdown(
        gathered
    )
    assert {r["paper"] for r in gathered["rows"]} == set(WITH_TABLE)


def test_verdict_counts_are_the_tables(gathered: dict) -> None:
    for paper in WITH_TABLE:
        counted = Counter(r["verdict"] for r in gathered["rows"] if r["paper"] == paper)
        counts = gathered["verdicts"][paper]
        assert counts["rows"] == sum(counted.values()) == len(VERDICTS) + 1
        assert {v: counts[v.replace(" ", "_")] for v in VERDICTS} == {
            v: counted[v] for v in VERDICTS
        }
        assert counts[VERDICTS[0].replace(" ", "_")] == 2


def test_points_are_the_seeds_means_and_the_papers_published_errors(gathered: dict) -> None:
    ours = [p for p in gathered["points"] if p["source"] == "ours"]
    assert {(p["paper"], p["network"]) for p in ours} == {
        ("wrn", "wide"), ("wrn", "thin"), ("wrn", "wide_dropout"),
        ("lm_resnet", "lm_resnet32"), ("lm_resnet", "resnet32"),
    }  # fmt: skip
    assert all(p["test_error"] == 10.5 and p["seeds"] == 2 for p in ours)
    published = [p for p in gathered["points"] if p["source"] == "published"]
    wrn28_10 = [p for p in published if p["network"] == "wrn28_10" and p["dataset"] == "cifar10"]
    assert (4.0, 36_479_194) in [(p["test_error"], p["params"]) for p in wrn28_10]  # Table 5
    assert {p["paper"] for p in published} >= {"wrn", "resnext"}  # resnext: no results, still


def test_each_figure_is_written_with_one_series_per_family(root: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "common.summary", "--root", str(root), "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((tmp_path / "summary.json").read_text())
    families = {p["family"] for p in written["points"]}
    assert {"wrn", "lm_resnet", "resnet", "resnext"} <= families
    for measure in summary.MEASURES:
        png = tmp_path / f"summary_{measure}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        fig = summary.figure(written, measure)
        labels = [c.get_label() for ax in fig.axes for c in ax.collections]
        shown = {label.split(" (")[0] for label in labels}
        has_measure = {p["family"] for p in written["points"] if p.get(measure) is not None}
        assert shown == has_measure, (measure, labels)
        assert len(labels) == len(set(labels))  # one series per family, source and panel


def test_a_new_paper_appears_once_it_has_a_table(root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(root, copy)
    shutil.copytree(copy / "papers" / "wrn", copy / "papers" / "dummy")
    (copy / "papers" / "dummy" / "results" / "table.json").unlink()
    assert "dummy" in summary.gather(copy)["missing"]
    (copy / "papers" / "dummy" / "results" / "table.json").write_text(json.dumps(_table("d")))
    assert "dummy" in summary.gather(copy)["papers"]


def test_outside_a_repo_it_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "common.summary", "--root", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    message = f"error: --root: {tmp_path} has no papers/ folder (run from the repo root)"
    assert result.stderr.strip() == message


def test_a_bare_dvc_repro_runs_every_paper_then_the_summary() -> None:
    """The plan `dvc repro` (no target: the root dvc.yaml) follows, as DVC's reproduce builds it:
    the summary after every paper's stage, and none of the data sets no paper trains on."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    with Repo(str(REPO)) as repo:
        stages = collect_stages(repo, ["dvc.yaml"])
        steps = [s.addressing for s in plan_repro(get_active_graph(repo.index.graph), stages)]
    papers = sorted(p.parent.name for p in (REPO / "papers").glob("*/dvc.yaml"))
    assert steps[-1] == "summary"
    assert {f"papers/{p}" for p in papers} <= set(steps)
    assert [s for s in steps if "data@" in s] == ["data/dvc.yaml:data@fashion_mnist"]


def test_comparison_notebook_draws_the_summary_or_says_how_to_get_it(
    root: Path, tmp_path: Path
) -> None:
    from tests.test_notebooks import MAX_BYTES, execute_notebook, output_text

    notebook = REPO / "notebooks" / "comparison.ipynb"
    code = [c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
    assert code[0].source.startswith("results_dir = ") and notebook.stat().st_size < MAX_BYTES
    (tmp_path / "empty").mkdir()
    outputs = execute_notebook(notebook, tmp_path / "empty", tmp_path / "a.ipynb", "results_dir")
    assert "No results yet" in output_text(outputs) and "dvc repro summary" in output_text(outputs)
    summary.write(summary.gather(root), tmp_path / "results")
    outputs = execute_notebook(notebook, tmp_path / "results", tmp_path / "b.ipynb", "results_dir")
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == len(summary.MEASURES)
    assert "| wrn | row 0 |" in output_text(outputs)
