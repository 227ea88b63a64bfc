"""common/table.py: verdicts of the key table, run filtering, written outputs, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.config import ConfigError
from common.table import (
    NOT_RUN,
    VERDICT_RULE,
    _ours_text,
    active_runs,
    build_rows,
    main,
    to_markdown,
    write_table,
)

PARAMS = {
    "profile": "default", "arms": ["a", "b"], "datasets": ["cifar10", "svhn"], "seeds": [0, 1],
}  # fmt: skip


def run(arm: str, seed: int, dataset: str = "cifar10", **metrics: Any) -> dict[str, Any]:
    """A metrics.json record as `common.training.fit` writes it."""
    return {
        "paper": "p", "profile": "default", "arm": arm, "dataset": dataset, "seed": seed,
        "precision": "32-true", "select": "lowest_val", "epochs": 3, "train_images": 45000,
        **metrics,
    }  # fmt: skip


def value_row(published: float = 6.0, tolerance: float = 0.5, **extra: Any) -> dict[str, Any]:
    return {
        "id": "err_a", "name": "Test error of a", "source": "Table 1", "published": published,
        "unit": "%", "tolerance": tolerance,
        "ours": {"metric": "test_error", "arm": "a", "dataset": "cifar10"}, **extra,
    }  # fmt: skip


def difference_row(**published: Any) -> dict[str, Any]:
    return {
        "id": "effect", "name": "a − b", "source": "Table 1", "unit": " pts", **published,
        "ours": {"metric": "test_error", "difference": ["a", "b"], "dataset": "cifar10"},
    }  # fmt: skip


def differences(*diffs: float) -> list[dict[str, Any]]:
    """Runs of arms a and b whose per-seed test-error differences a − b are `diffs`."""
    runs = []
    for seed, diff in enumerate(diffs):
        runs += [run("a", seed, test_error=10.0 + diff), run("b", seed, test_error=10.0)]
    return runs


def only_row(row: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = build_rows({"title": "T", "rows": [row]}, runs)
    assert len(rows) == 1
    return rows[0]


# ---- verdicts ----


@pytest.mark.parametrize(
    ("metric", "measure"),
    [
        ("final_train_error", "; training error of the last epoch (training mode)"),
        ("train_time_s", "; training wall time (evaluation excluded)"),
        ("error_growth", "; `error_growth` of each run's analysis"),
    ],
)
def test_how_names_each_rows_own_measure(metric, measure):
    """Issue 19: a training-time or training-error row no longer says "test error at ..."."""
    runs = [run("a", s, **{metric: 1.0 + s}, threads=2) for s in (0, 1)]
    how = only_row(value_row(ours={"metric": metric, "arm": "a", "dataset": "cifar10"}), runs)
    assert (
        how["how"].endswith(f"32-true, 2 CPU threads{measure}") and "test error" not in how["how"]
    )


def values(arm: str, *numbers: float, metric: str = "test_error") -> list[dict[str, Any]]:
    """Runs of `arm` whose `metric` per seed is `numbers`."""
    return [run(arm, seed, **{metric: x}) for seed, x in enumerate(numbers)]


# ---- verdicts (issue 20): the 95% interval over seeds against the band and zero ----


def test_tight_interval_inside_the_band_is_reproduced():
    entry = only_row(value_row(), values("a", 6.1, 6.2, 6.3))  # 6 ± 0.5
    assert entry["verdict"] == "reproduced"
    assert entry["ours"]["n"] == 3 and entry["ours"]["mean"] == pytest.approx(6.2)
    # t(0.975, 2) = 4.303: half-width 4.303 · 0.1 / √3 = 0.248
    assert entry["ours"]["ci"] == pytest.approx([6.2 - 0.2484, 6.2 + 0.2484], abs=1e-3)
    assert entry["id"] == "err_a" and entry["name"] == "Test error of a"
    assert entry["published"] == "6% (Table 1)"
    assert entry["how"] == (
        "default profile, cifar10 (45000 train images), 3 epochs, seeds 0,1,2, 32-true; "
        "test error at the lowest validation error epoch"
    )


def test_wide_interval_around_the_published_number_is_inconclusive():
    """The mean sits on the published 6%, but three seeds this spread cannot tell: the old rule
    called it reproduced (its mean within tolerance)."""
    entry = only_row(value_row(), values("a", 4.0, 6.0, 8.0))
    assert entry["ours"]["mean"] == pytest.approx(6.0)
    assert entry["verdict"] == "inconclusive"
    needed = entry["ours"]["seeds_to_decide"]  # half-width < 0.5 at std 2: ~ (2 · 2 / 0.5)²
    assert 60 < needed < 70
    assert f"~{needed} seeds would decide at this spread" in _ours_text(entry)


def test_interval_outside_the_band_is_not_reproduced():
    # A run metric is not an effect: the right side of the number is no consolation.
    entry = only_row(value_row(), values("a", 6.9, 7.0, 7.1))
    assert entry["verdict"] == "not reproduced"


def test_best_of_n_is_judged_like_with_like():
    entry = only_row(value_row(statistic="best"), values("a", 6.2, 7.0))
    assert entry["ours"]["best"] == pytest.approx(6.2) and entry["ours"]["ci"] == [6.2, 6.2]
    assert entry["verdict"] == "reproduced"
    assert entry["published"] == "6% (Table 1, best)"
    assert _ours_text(entry).startswith("6.20% (best of 2;")


def test_median_of_n_reads_the_smallest_to_largest_seed():
    entry = only_row(value_row(statistic="median"), values("a", 5.8, 6.1, 6.4))
    assert entry["ours"]["ci"] == [5.8, 6.4] and entry["verdict"] == "reproduced"
    assert "covers the median at 75%" in _ours_text(entry)


@pytest.mark.parametrize(
    ("diffs", "verdict"),
    [
        ((-0.95, -1.0, -1.05), "reproduced"),  # interval inside −1 ± 0.2
        ((-3.0, -3.2, -2.8), "direction reproduced"),  # excludes zero on the paper's side
        ((2.0, 2.2, 2.1), "not reproduced"),  # excludes zero on the wrong side
        ((-3.0, -3.2), "direction reproduced"),  # 2 seeds: t(0.975, 1) = 12.7, still clear
        ((-3.0, -0.2), "inconclusive"),  # the same sign, too spread for 2 seeds
        ((-2.0, 1.0, -0.5), "inconclusive"),  # straddles zero and the band
    ],
)
def test_difference_row_verdicts(diffs, verdict):
    entry = only_row(difference_row(published=-1.0, tolerance=0.2), differences(*diffs))
    assert entry["ours"]["mean"] == pytest.approx(sum(diffs) / len(diffs))
    assert entry["verdict"] == verdict


def test_the_same_mean_with_more_spread_is_inconclusive():
    tight = only_row(difference_row(direction="lower"), differences(-3.0, -3.2, -2.8))
    wide = only_row(difference_row(direction="lower"), differences(-0.5, -7.0, -1.5))
    assert tight["ours"]["mean"] == pytest.approx(wide["ours"]["mean"])
    assert (tight["verdict"], wide["verdict"]) == ("direction reproduced", "inconclusive")


def test_paired_differences_use_the_pairs():
    """Seeds that move both arms alike (a hard seed, an easy one) cancel in the per-seed
    difference: the pairs decide what the two arms' unpaired spreads could not."""
    runs = []
    for seed, level in enumerate((5.0, 20.0, 12.0)):
        runs += [
            run("a", seed, test_error=level - 1.0 + 0.1 * seed),
            run("b", seed, test_error=level),
        ]
    entry = only_row(difference_row(direction="lower"), runs)
    assert entry["ours"]["std"] == pytest.approx(0.1)
    assert entry["verdict"] == "direction reproduced"


@pytest.mark.parametrize(
    ("direction", "diffs", "verdict"),
    [
        ("higher", (1.0, 1.4, 1.2), "direction reproduced"),
        ("higher", (-1.0, -1.4, -1.2), "not reproduced"),
        ("lower", (-1.0, -1.4, -1.2), "direction reproduced"),
        ("lower", (-1.0, 1.4, 0.2), "inconclusive"),
        ("lower", (-1.0,), "inconclusive"),  # one seed: no spread, no interval
    ],
)
def test_direction_row_verdicts(direction, diffs, verdict):
    entry = only_row(difference_row(direction=direction), differences(*diffs))
    assert entry["verdict"] == verdict
    assert entry["published"] == f"{direction} (Table 1)"


def test_difference_pairs_seeds():
    runs = differences(-3.0, -3.2)[:3]  # seed 1 of b is missing
    entry = only_row(difference_row(direction="lower"), runs)
    assert entry["ours"]["n"] == 1 and entry["ours"]["mean"] == pytest.approx(-3.0)


def test_saving_row():
    row = {
        "id": "saving", "name": "Time saving", "source": "Table 2", "published": 25.0,
        "unit": "%", "tolerance": 1.0,
        "ours": {"metric": "train_time_s", "saving": ["a", "b"], "dataset": "cifar10"},
    }  # fmt: skip
    runs = [
        run("a", 0, train_time_s=75.0), run("b", 0, train_time_s=100.0),
        run("a", 1, train_time_s=60.0), run("b", 1, train_time_s=80.0),
    ]  # fmt: skip
    entry = only_row(row, runs)
    assert entry["ours"]["mean"] == pytest.approx(25.0)  # 100 · (1 − a/b) per seed
    assert entry["ours"]["std"] == pytest.approx(0.0)
    assert entry["verdict"] == "reproduced"  # no spread: the interval is the point 25%
    runs[2]["train_time_s"] = 90.0  # seed 1 now saves −12.5%
    entry = only_row(row, runs)
    assert entry["ours"]["mean"] == pytest.approx((25.0 - 12.5) / 2)
    assert entry["verdict"] == "inconclusive"  # 2 seeds this far apart bound nothing


def test_missing_runs_are_not_run_in_this_profile():
    entry = only_row(value_row(), [run("b", 0, test_error=6.0)])
    assert entry["verdict"] == NOT_RUN == "not run in this profile"
    assert only_row(value_row(), [run("a", 0)])["verdict"] == NOT_RUN  # the metric not measured
    assert entry["ours"] is None and entry["how"] == ""
    entry = only_row(difference_row(direction="lower"), [run("a", 0, test_error=1.0)])
    assert entry["verdict"] == NOT_RUN


def test_star_dataset_expands_per_dataset():
    row = difference_row(direction="lower")
    row["ours"]["dataset"] = "*"
    runs = differences(-1.0, -1.5)
    runs += [{**r, "dataset": "svhn", "test_error": r["test_error"] * 2} for r in runs]
    rows = build_rows({"title": "T", "rows": [row]}, runs)
    assert [r["id"] for r in rows] == ["effect@cifar10", "effect@svhn"]
    assert [r["name"] for r in rows] == ["a − b [cifar10]", "a − b [svhn]"]
    assert [r["ours"]["mean"] for r in rows] == pytest.approx([-1.25, -2.5])
    assert "svhn" in rows[1]["how"]
    # No runs at all: one row, not run.
    (empty,) = build_rows({"title": "T", "rows": [row]}, [])
    assert empty["id"] == "effect" and empty["verdict"] == NOT_RUN


def _params_row(published: float) -> dict[str, Any]:
    return {
        "id": "params20", "name": "ResNet-20 parameters", "source": "Table 6",
        "published": published, "unit": "M", "tolerance": 0.005,
        "ours": {
            "model": {"class_path": "papers.resnet.model.CifarResNet", "depth": 20},
            "stat": "params", "input_shape": [1, 3, 32, 32], "num_classes": 10, "scale": 1.0e-6,
        },
    }  # fmt: skip


def test_model_stat_row_counts_parameters():
    entry = only_row(_params_row(0.27), [])
    assert entry["ours"]["mean"] == pytest.approx(0.269722)
    assert entry["how"] == "counted on the network"
    assert entry["verdict"] == "reproduced"
    assert only_row(_params_row(0.30), [])["verdict"] == "not reproduced"


# ---- runs on disk, written table ----


def _write_runs(runs_dir: Path, runs: list[dict[str, Any]]) -> None:
    for r in runs:
        folder = runs_dir / f"{r['arm']}-{r['dataset']}-s{r['seed']}-{r['profile']}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(r))


def test_active_runs_keeps_only_the_active_profile_arms_datasets_and_seeds(tmp_path):
    keep = [run("a", 0, test_error=1.0), run("b", 1, "svhn", test_error=2.0)]
    drop = [
        {**run("a", 1), "profile": "paper"},
        run("a", 2),  # a seed not in the list
        run("c", 0),  # an arm not in the list
        run("a", 0, "mnist"),  # a data set not in the list
    ]
    _write_runs(tmp_path / "runs", keep + drop)
    (tmp_path / "runs" / "unfinished").mkdir()  # no metrics.json yet
    loaded = [r.metrics for r in active_runs(tmp_path, PARAMS)]
    assert sorted((r["arm"], r["dataset"], r["seed"]) for r in loaded) == [
        ("a", "cifar10", 0), ("b", "svhn", 1),
    ]  # fmt: skip
    assert active_runs(tmp_path, {**PARAMS, "profile": "paper"})[0].seed == 1


def test_active_runs_add_each_runs_analyses(tmp_path):
    _write_runs(tmp_path / "runs", [run("a", 0, test_error=6.0)])
    analysis = {**run("a", 0), "max_error_change": 1.5, "test_error": 99.0, "series": [1, 2]}
    (tmp_path / "runs" / "a-cifar10-s0-default" / "analyses").mkdir()
    (tmp_path / "runs" / "a-cifar10-s0-default" / "analyses" / "lesion.json").write_text(
        json.dumps(analysis)
    )
    (tmp_path / "results" / "memory").mkdir(parents=True)
    memory = {**run("a", 0), "memory_mib_per_l": 1.1}
    (tmp_path / "results" / "memory" / "a.json").write_text(json.dumps(memory))
    orphan = {**run("a", 1), "memory_mib_per_l": 9.0}  # seed 1 never finished training
    (tmp_path / "results" / "memory" / "orphan.json").write_text(json.dumps(orphan))
    [run_a] = active_runs(tmp_path, PARAMS)
    a = run_a.metrics
    assert (a["test_error"], a["max_error_change"], a["memory_mib_per_l"]) == (6.0, 1.5, 1.1)
    assert "series" not in a  # figures' series stay in their files; rows take scalars


def _paper_dir(root: Path, regime: dict[str, Any] | None = None) -> Path:
    paper = root / "paper"
    paper.mkdir()
    published = {"title": "Tiny paper — Table 1", "rows": [value_row(), _params_row(0.27)]}
    (paper / "published.yaml").write_text(yaml.safe_dump(published, allow_unicode=True))
    networks = {"networks": {"a": {}, "b": {}}} | ({"regime": regime} if regime else {})
    (paper / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "seeds": [0, 1, 2], **networks}))
    finished = {"final_train_error": 2.0}
    _write_runs(paper / "runs", [run("a", 0, test_error=6.1, **finished),
                                 run("a", 1, test_error=6.2, **finished),
                                 run("a", 2, test_error=6.3, **finished)])  # fmt: skip
    _write_runs(paper / "runs", [{**run("a", 3, test_error=50.0), "profile": "paper"}])
    return paper


def test_write_table_writes_json_and_markdown(tmp_path):
    paper = _paper_dir(tmp_path)
    rows = write_table(paper, tmp_path / "results")
    table = json.loads((tmp_path / "results" / "table.json").read_text())
    assert table == {
        "title": "Tiny paper — Table 1", "rows": rows, "regime": None, "verdict_rule": VERDICT_RULE,
    }  # fmt: skip
    assert [r["verdict"] for r in rows] == ["reproduced", "reproduced"]
    assert rows[0]["ours"]["n"] == 3  # the paper-profile run stayed out
    markdown = (tmp_path / "results" / "table.md").read_text()
    assert markdown == to_markdown("Tiny paper — Table 1", rows)
    lines = markdown.splitlines()
    assert lines[0] == "# Tiny paper — Table 1"
    assert lines[2].startswith("| Result | Published | Ours |")
    assert lines[4] == (
        "| Test error of a | 6% (Table 1) | 6.20%, 95% CI [5.95, 6.45] (3 seeds, std 0.10) | "
        "default profile, cifar10 (45000 train images), 3 epochs, seeds 0,1,2, 32-true; "
        "test error at the lowest validation error epoch | reproduced |"
    )
    assert lines[5].startswith("| ResNet-20 parameters | 0.27M (Table 6) | 0.2697M | counted")
    assert lines[-1] == f"Verdict rule: {VERDICT_RULE}"


def _regime(min_gap: float) -> dict[str, Any]:
    criterion = {"check": "overfits", "arms": ["a"], "max_train_error": 5, "min_gap": min_gap}
    return {"claim": "a overfits", "criteria": [criterion]}


@pytest.mark.parametrize(("min_gap", "verdict"), [(1.0, "reproduced"), (9.0, "inconclusive")])
def test_regime_is_judged_printed_and_decides_trained_rows(tmp_path, min_gap, verdict):
    paper = _paper_dir(tmp_path, regime=_regime(min_gap))
    for seed in (0, 1, 2):  # the regime reads each run's history: training error per epoch
        (paper / "runs" / f"a-cifar10-s{seed}-default" / "history.csv").write_text(
            "epoch,lr,train_error\n1,0.1,20\n2,0.1,2\n"
        )
    rows = write_table(paper, tmp_path / "results")
    assert [r["verdict"] for r in rows] == [verdict, "reproduced"]  # counted rows need no regime
    table = json.loads((tmp_path / "results" / "table.json").read_text())
    assert table["regime"]["holds"] is (verdict == "reproduced")
    [finding] = table["regime"]["findings"]
    assert "gap 4.1/4.2/4.3 points" in finding["observed"]  # test error 6.1/6.2/6.3 − 2
    markdown = (tmp_path / "results" / "table.md").read_text()
    assert "Regime (stated in params.yaml before the runs): a overfits" in markdown
    assert f"- {finding['text']}: {'yes' if finding['holds'] else 'no'} (" in markdown


def test_write_table_without_published_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^paper: .*published\.yaml does not exist"):
        write_table(tmp_path, tmp_path / "results")


def test_table_main_build_then_show(tmp_path, capsys):
    paper = _paper_dir(tmp_path)
    main(["build", str(paper)])
    built = (paper / "results" / "table.md").read_text()
    # One line: the root stage prints the table, once per `dvc repro` (issue 19).
    assert capsys.readouterr().out == f"key table: {paper / 'results' / 'table.md'} (2 rows)\n"
    main(["show", str(paper)])
    assert capsys.readouterr().out == built


def test_table_show_without_a_table_fails_with_one_line(tmp_path, run_module):
    result = run_module("common.table", "show", tmp_path, cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: paper: no table in")
    assert not (tmp_path / "results").exists()
