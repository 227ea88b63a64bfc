"""published.yaml is validated on load: every paper's file passes; a mistake is one clear line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from common.config import ConfigError
from common.published import load_published, ours_kind

REPO = Path(__file__).resolve().parents[1]
VALUE = {"metric": "test_error", "arm": "a", "dataset": "fashion_mnist"}
COUNT = {
    "model": {"class_path": "papers.resnet.model.CifarResNet", "depth": 20},
    "stat": "params", "input_shape": [1, 3, 32, 32], "num_classes": 10,
}  # fmt: skip
GOOD = {
    "title": "T",
    "rows": [
        {"id": "v", "name": "V", "source": "Table 1", "published": 5.0, "tolerance": 0.5,
         "ours": VALUE},
        {"id": "d", "name": "D", "source": "Fig. 6", "direction": "lower",
         "ours": {"metric": "test_error", "difference": ["a", "b"], "dataset": "*"}},
        {"id": "c", "name": "C", "source": "Table 6", "published": 0.27, "ours": COUNT},
    ],
}  # fmt: skip


def _write(tmp_path: Path, published: dict) -> Path:
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump(published))
    return path


@pytest.mark.parametrize("paper", sorted(p.parent.name for p in REPO.glob("papers/*/dvc.yaml")))
def test_every_paper_file_is_valid(paper: str) -> None:
    assert load_published(REPO / "papers" / paper / "published.yaml")["rows"]


def test_kinds() -> None:
    kinds = [ours_kind(row["ours"]) for row in GOOD["rows"]]
    assert kinds == ["value", "difference", "count"]
    assert ours_kind({"metric": "t", "saving": ["a", "b"], "dataset": "x"}) == "saving"


# case -> (edit of row 0 or 2 of GOOD, fragments of the one-line error)
CASES = {
    "misspelt tolerance": (0, {"tolerence": 0.5}, ["rows[0] (v).tolerence: unknown key"]),
    "both published and direction": (0, {"direction": "lower"}, ["exactly one of published"]),
    "published not a number": (0, {"published": "x"}, ["rows[0] (v).published: 'x'"]),
    "negative tolerance": (0, {"tolerance": -1}, ["tolerance: -1 must be a number >= 0"]),
    "bad direction": (1, {"direction": "up"}, ["direction: 'up' is not one of higher, lower"]),
    "bad statistic": (0, {"statistic": "max"}, ["statistic: 'max' is not one of"]),
    "unknown ours key": (0, {"ours": {**VALUE, "arms": "a"}}, ["ours.arms: unknown key"]),
    "count without num_classes": (
        2, {"ours": {k: v for k, v in COUNT.items() if k != "num_classes"}},
        ["ours.num_classes: missing"],
    ),
    "bad stat": (2, {"ours": {**COUNT, "stat": "flops"}}, ["ours.stat: 'flops' is not one of"]),
    "difference of one arm": (
        1, {"ours": {"metric": "e", "difference": ["a"], "dataset": "*"}},
        ["ours.difference: ['a'] must be a list of exactly 2 (two arms [a, b]"],
    ),
    "missing id": (0, {"id": None}, ["rows[0].id: missing"]),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_mistakes_are_one_line_naming_the_field(tmp_path: Path, case: str) -> None:
    index, edit, fragments = CASES[case]
    published = copy.deepcopy(GOOD)
    published["rows"][index].update(edit)
    published["rows"][index] = {k: v for k, v in published["rows"][index].items() if v is not None}
    with pytest.raises(ConfigError) as err:
        load_published(_write(tmp_path, published))
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_duplicate_ids_and_unknown_top_level_keys(tmp_path: Path) -> None:
    published = copy.deepcopy(GOOD)
    published["rows"][1]["id"] = "v"
    with pytest.raises(ConfigError, match=r"rows\[0\] \(v\)\.id: 'v' is used by more than one"):
        load_published(_write(tmp_path, published))
    with pytest.raises(ConfigError, match=r"published\.yaml titel: unknown key \(allowed: title"):
        load_published(_write(tmp_path, {**GOOD, "titel": "x"}))
