"""common/schema.py: one-line errors from the schemas, the params schema, the JSON schemas written
out (current, and agreeing with the files and with the pydantic models)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import pytest
import yaml
from pydantic import Field

from common import check, schema
from common.config import ConfigError, load_params
from common.params import check_params
from common.schema import Model, validate

REPO = Path(__file__).resolve().parents[1]
PAPERS = sorted(p.parent.name for p in REPO.glob("papers/*/dvc.yaml"))


class Leaf(Model):
    kind: Literal["leaf"]
    size: int = Field(ge=1)
    """How big it is. A second sentence the message leaves out."""


class Branch(Model):
    kind: Literal["branch"]
    share: float = Field(gt=0, le=1)


class Tree(Model):
    name: str
    mode: Literal["fast", "exact"] = "exact"
    parts: list[Annotated[Leaf | Branch, Field(discriminator="kind")]] = Field(min_length=1)
    pair: list[str] = Field(None, min_length=2, max_length=2)
    """Two names [a, b]."""
    by_set: dict[Literal["mnist", "svhn"], int] = Field(default_factory=dict)


GOOD = {"name": "t", "parts": [{"kind": "leaf", "size": 2}, {"kind": "branch", "share": 0.5}]}


def _edit(**changes: Any) -> dict[str, Any]:
    tree = copy.deepcopy(GOOD)
    tree.update(changes)
    return tree


# case -> (the input, the one-line error)
CASES = {
    "unknown key": (
        _edit(nmae="t"),
        "nmae: unknown key (allowed: name, mode, parts, pair, by_set)",
    ),
    "missing": ({"parts": GOOD["parts"]}, "name: missing (required: name, parts)"),
    "choice": (_edit(mode="quick"), "mode: 'quick' is not one of exact, fast"),
    "bool is not an int": (
        _edit(parts=[{"kind": "leaf", "size": True}]),
        "parts[0].size: True is not of type int (how big it is)",
    ),
    "text is not a number": (
        _edit(parts=[{"kind": "branch", "share": "half"}]),
        "parts[0].share: 'half' is not of type float",
    ),
    "lower bound": (
        _edit(parts=[{"kind": "leaf", "size": 0}]),
        "parts[0].size: 0 must be an integer >= 1",
    ),
    "upper bound": (
        _edit(parts=[{"kind": "branch", "share": 2}]),
        "parts[0].share: 2 must be a number <= 1",
    ),
    "unknown tag": (
        _edit(parts=[{"kind": "twig"}]),
        "parts[0].kind: 'twig' is not one of branch, leaf",
    ),
    "no tag": (_edit(parts=[{"size": 1}]), "parts[0].kind: missing (one of branch, leaf)"),
    "a member's unknown key": (
        _edit(parts=[{"kind": "leaf", "size": 1, "share": 1}]),
        "parts[0].share: unknown key (allowed for leaf: kind, size)",
    ),
    "a member's missing key": (
        _edit(parts=[{"kind": "branch"}]),
        "parts[0].share: missing (branch needs kind, share)",
    ),
    "empty list": (_edit(parts=[]), "parts: must be a non-empty list"),
    "exact length": (
        _edit(pair=["a"]),
        "pair: ['a'] must be a list of exactly 2 (two names [a, b])",
    ),
    "not a list": (_edit(parts={"kind": "leaf"}), "parts: {'kind': 'leaf'} must be a list"),
    "an item not a mapping": (
        _edit(parts=[3]),
        "parts[0]: 3 must be a mapping (kinds: branch, leaf)",
    ),
    "a key not allowed": (
        _edit(by_set={"mnst": 1}),
        "by_set.mnst: 'mnst' is not one of mnist, svhn",
    ),
    "null where a value is needed": (
        _edit(pair=None),
        "pair: None must be a list (two names [a, b])",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_errors_are_one_line_naming_the_field_and_the_choices(case: str) -> None:
    data, message = CASES[case]
    with pytest.raises(ConfigError) as err:
        validate(Tree, data)
    assert str(err.value) == message


def test_the_path_opens_with_the_place_and_names_items_by_id() -> None:
    items = [{"id": "first", "size": 1}, {"id": "second", "size": 0}]

    class Item(Model):
        id: str
        size: int = Field(ge=1)

    class Doc(Model):
        items: list[Item]

    with pytest.raises(ConfigError, match=r"^doc\.yaml: \[1\] must be a mapping \(keys: items\)$"):
        validate(Doc, [1], where="doc.yaml")
    with pytest.raises(ConfigError, match=r"^doc\.yaml items\[1\] \(second\)\.size: 0 must be"):
        validate(Doc, {"items": items}, where="doc.yaml")
    with pytest.raises(ConfigError, match=r"^a\[2\]\.items\[1\] \(second\)\.size: 0 must be"):
        validate(Doc, {"items": items}, loc=("a", 2))


def test_models_are_frozen_and_valid_input_passes() -> None:
    tree = validate(Tree, GOOD)
    assert tree.parts[0].size == 2 and tree.mode == "exact"
    with pytest.raises(ValueError):
        tree.name = "other"


@pytest.mark.parametrize("paper", PAPERS)
def test_every_params_file_passes_the_params_schema(paper: str) -> None:
    check_params(load_params(REPO / "papers" / paper / "params.yaml"))


# case -> (edit of stochastic_depth's params, the one-line error's start)
PARAMS_CASES = {
    "misspelt top-level key": (
        lambda p: p.update(regmie=p.pop("regime")),
        "regmie: unknown key (allowed: datasets, seeds, arms, profile, ",
    ),
    "misspelt section": (
        lambda p: p["profiles"]["default"].update(optimm={}),
        "profiles.default.optimm: unknown key (allowed: model, select, callbacks, data, ",
    ),
    "section not a mapping": (
        lambda p: p["networks"]["constant"].update(optim=[0.1]),
        "networks.constant.optim: [0.1] must be a mapping",
    ),
    "profile data set": (
        lambda p: p["profiles"]["paper"]["datasets"].update(cifar=None),
        "profiles.paper.datasets.cifar: 'cifar' is not one of cifar10, cifar100, fashion_mnist",
    ),
    "select": (
        lambda p: p["networks"]["constant"].update(select="best"),
        "networks.constant.select: 'best' is not one of last, lowest_val",
    ),
    "negative seed": (lambda p: p.update(seeds=[0, -1]), "seeds[1]: -1 must be an integer >= 0"),
    "regime": (
        lambda p: p["regime"]["criteria"][1].update(tolerance=-2),
        "regime.criteria[1].tolerance: -2 must be a number >= 0",
    ),
}


@pytest.mark.parametrize("case", PARAMS_CASES)
def test_params_mistakes_are_one_line(case: str) -> None:
    edit, start = PARAMS_CASES[case]
    params = load_params(REPO / "papers" / "stochastic_depth" / "params.yaml")
    edit(params)
    with pytest.raises(ConfigError) as err:
        check_params(params)
    assert str(err.value).startswith(start) and "\n" not in str(err.value), str(err.value)


def test_committed_json_schemas_are_current() -> None:
    schema.main(["--check"])  # exits with the command to run when a model changed


def test_stale_json_schema_is_one_line_with_the_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(schema, "SCHEMA_DIR", tmp_path / "schemas")
    monkeypatch.setattr(schema, "REPO", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        schema.main(["--check"])
    message = exit_info.value.code
    assert isinstance(message, str) and "\n" not in message
    assert message.startswith("error: schemas/params.schema.json is stale")
    assert "run `python -m common.schema`" in message
    schema.main([])
    assert sorted(p.name for p in (tmp_path / "schemas").iterdir()) == sorted(schema.SCHEMAS)
    schema.main(["--check"])


@pytest.mark.parametrize("kind", ["params", "published"])
def test_every_paper_file_matches_its_json_schema(kind: str) -> None:
    """What an editor checks agrees with the check stage: every file passes, a misspelt key
    fails."""
    validator = jsonschema.Draft202012Validator(
        json.loads((REPO / "schemas" / f"{kind}.schema.json").read_text())
    )
    for paper in PAPERS:
        content = yaml.safe_load((REPO / "papers" / paper / f"{kind}.yaml").read_text())
        assert not list(validator.iter_errors(content)), paper
        misspelt = copy.deepcopy(content)
        key = "tolerance" if kind == "published" else "seeds"
        target = misspelt["rows"][0] if kind == "published" else misspelt
        target[key + "x"] = 1
        assert list(validator.iter_errors(misspelt)), paper
    if kind == "published":  # a row gives published or direction, one of them
        row = copy.deepcopy(content["rows"][0])
        row.pop("published", None), row.pop("direction", None)
        assert list(validator.iter_errors({"title": "t", "rows": [row]}))


def test_check_stage_refuses_a_misspelt_top_level_key(tmp_path: Path, monkeypatch) -> None:
    """Through `python -m common.check`: a `regime` misspelt would silently drop the regime."""
    folder = tmp_path / "papers" / "stochastic_depth"
    ignore = shutil.ignore_patterns("runs", "results", "__pycache__", "dvc.lock")
    shutil.copytree(REPO / "papers" / "stochastic_depth", folder, ignore=ignore)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["regmie"] = params.pop("regime")
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        check.main(["papers/stochastic_depth"])
    message = exit_info.value.code
    assert isinstance(message, str) and "\n" not in message
    assert message.startswith(
        "error: regmie: unknown key (allowed: datasets, seeds, arms, profile,"
    )
    assert not (folder / "results").exists()
