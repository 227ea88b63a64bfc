"""Bad input through every entry point: one line naming the field, exit ≠ 0, nothing touched.

`common.train`, `common.data` and `common.table` run in-process (their `main`, as the CLI runs
it); a few cases go through `dvc repro` in one temporary copy of the repo.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from common import data, table, train
from tests.conftest import REPO, child_env, merge

SD = "papers.stochastic_depth.model.StochasticDepthResNet"


def _network(**sections: Any) -> Callable[[dict], None]:
    """An edit of the params: `sections` merged over the `tiny` arm."""
    return lambda p: p["networks"].update(tiny=merge(p["networks"]["tiny"], sections))


def _set(key: str, value: Any) -> Callable[[dict], None]:
    return lambda p: p.update({key: value})


def _drop(key: str) -> Callable[[dict], None]:
    return lambda p: p.pop(key)


# case -> (edit of TINY_PARAMS, the error line's start, fragments it must also hold)
TRAIN_CASES: dict[str, tuple[Callable[[dict], None], str, list[str]]] = {
    "unsorted milestones": (
        _network(schedule={"milestones": [3, 2]}),
        "schedule.milestones: [3, 2]",
        ["increase"],
    ),
    "batch_size 0": (_network(optim={"batch_size": 0}), "optim.batch_size: 0", [">= 1"]),
    "batch_size -1": (_network(optim={"batch_size": -1}), "optim.batch_size: -1", [">= 1"]),
    "lr text": (_network(optim={"lr": "x"}), "optim.lr: 'x'", ["float"]),
    "flip text": (_network(data={"flip": "yes"}), "data.flip: 'yes'", ["bool"]),
    "optim not a mapping": (_network(optim=[0.1]), "optim: [0.1]", ["mapping"]),
    "lr negative": (_network(optim={"lr": -0.1}), "optim.lr: -0.1", ["> 0"]),
    "momentum negative": (_network(optim={"momentum": -1}), "optim.momentum: -1", [">= 0"]),
    "epochs 0": (_network(schedule={"epochs": 0}), "schedule.epochs: 0", [">= 1"]),
    "schedule unit": (_network(schedule={"unit": "day"}), "schedule.unit: 'day'", ["epoch, step"]),
    "train_size 0": (_network(data={"train_size": 0}), "data.train_size: 0", [">= 1"]),
    "normalize": (_network(data={"normalize": "x"}), "data.normalize: 'x'", ["mean_std"]),
    "devices 0": (_network(trainer={"devices": 0}), "trainer.devices: 0", [">= 1"]),
    "precision": (
        _network(trainer={"precision": "bogus"}),
        "trainer.precision: 'bogus'",
        ["32-true", "bf16-mixed"],
    ),
    "accelerator": (_network(trainer={"accelerator": "x"}), "trainer.accelerator: 'x'", ["cpu"]),
    "wandb mode": (_network(wandb={"mode": "bogus"}), "wandb.mode: 'bogus'", ["offline"]),
    "select": (_network(select="best"), "select: 'best'", ["last, lowest_val"]),
    "model argument type": (
        _network(model={"class_path": SD, "survival_prob_last": "x"}),
        "model.survival_prob_last: 'x'",
        ["float"],
    ),
    "model depth": (_network(model={"depth": 21}), "model: depth: 21", ["6n+2"]),
    "unknown field": (_network(optim={"lrr": 0.1}), "optim.lrr: unknown field", ["batch_size"]),
    "no profiles": (_drop("profiles"), "profiles: missing", ["default"]),
    "unknown profile": (_set("profile", "nope"), "profile: 'nope'", ["default, paper"]),
    "no seeds": (_set("seeds", []), "seeds: []", ["non-empty list"]),
    "seed text": (_set("seeds", ["a"]), "seeds: 'a'", ["integer"]),
}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder holding an interrupted run's checkpoint, which bad input must not touch."""
    out = tmp_path / "runs" / "tiny-fashion_mnist-s0"
    (out / "ckpt").mkdir(parents=True)
    (out / "ckpt" / "last.ckpt").write_bytes(b"an epoch-2 checkpoint")
    (out / "history.csv").write_text("epoch\n1\n2\n")
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _one_line(main: Callable[[list[str]], None], argv: list[Any], start: str) -> str:
    """The CLI exits non-zero with one line `error: <start>...`."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    message = info.value.code
    assert isinstance(message, str), message  # a string exit code: printed, status 1
    assert "\n" not in message and message.startswith(f"error: {start}"), message
    return message


def _train(tmp_path: Path, params_text: str, data_file: Path, out: Path, start: str) -> str:
    params_file = tmp_path / "tiny_paper" / "params.yaml"
    params_file.parent.mkdir(exist_ok=True)
    params_file.write_text(params_text)
    argv = ["--params", params_file, "--arm", "tiny", "--dataset", "fashion_mnist", "--seed", 0]
    return _one_line(train.main, [*argv, "--data", data_file, "--out", out], start)


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_bad_setting(case, tmp_path, params, prepared_file, run_dir):
    edit, start, fragments = TRAIN_CASES[case]
    edit(params)
    before = _snapshot(tmp_path / "runs")
    message = _train(tmp_path, yaml.safe_dump(params), prepared_file, run_dir, start)
    assert all(f in message for f in fragments), message
    assert _snapshot(tmp_path / "runs") == before


def test_train_yaml_syntax_error(tmp_path, prepared_file, run_dir):
    before = _snapshot(tmp_path / "runs")
    message = _train(tmp_path, "profile: [default\n", prepared_file, run_dir, "params: ")
    assert "is not valid YAML" in message and "line 2" in message
    assert _snapshot(tmp_path / "runs") == before


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "missing"])
def test_train_bad_data_file(damage, tmp_path, params, prepared_file, run_dir):
    blob, data_file = prepared_file.read_bytes(), tmp_path / "data.pt"
    if damage == "truncated":
        data_file.write_bytes(blob[: len(blob) // 3])
    elif damage == "flipped byte":
        labels = torch.load(prepared_file, weights_only=True)["test_labels"].numpy().tobytes()
        at = blob.find(labels[:64]) + 8
        data_file.write_bytes(blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :])
    before = _snapshot(tmp_path / "runs")
    message = _train(tmp_path, yaml.safe_dump(params), data_file, run_dir, f"data: {data_file}")
    assert "re-run its `data` stage" in message or "does not exist" in message
    assert _snapshot(tmp_path / "runs") == before


def test_data_unknown_dataset(tmp_path):
    _one_line(data.main, ["nosuch", tmp_path / "out.pt", "--no-download"], "dataset: 'nosuch'")
    assert list(tmp_path.iterdir()) == []


def test_data_missing_raw_files(tmp_path):
    argv = ["mnist", tmp_path / "out.pt", "--raw-root", tmp_path / "raw", "--no-download"]
    _one_line(data.main, argv, f"mnist: no data in {tmp_path / 'raw' / 'mnist'}")
    assert list(tmp_path.iterdir()) == []


def _paper(tmp_path: Path, edit: Callable[[dict], None]) -> Path:
    paper = tmp_path / "paper"
    shutil.copytree(
        REPO / "papers" / "stochastic_depth",
        paper,
        ignore=shutil.ignore_patterns("runs", "results", "__pycache__"),
    )
    params = yaml.safe_load((paper / "params.yaml").read_text())
    edit(params)
    (paper / "params.yaml").write_text(yaml.safe_dump(params))
    return paper


@pytest.mark.parametrize(
    ("edit", "start"),
    [
        (_set("seeds", []), "seeds: []"),
        (_set("arms", None), "arms: None"),
        (_set("datasets", ["nosuch"]), "datasets: 'nosuch'"),
    ],
    ids=["no seeds", "no arms", "unknown dataset"],
)
def test_table_build_bad_matrix(edit, start, tmp_path):
    paper = _paper(tmp_path, edit)
    _one_line(table.main, ["build", paper], start)
    assert not (paper / "results").exists()


def test_table_show_before_build(tmp_path):
    paper = _paper(tmp_path, lambda p: None)
    _one_line(table.main, ["show", paper], f"paper: no table in {paper / 'results'}")


# ---- through `dvc repro`, in one temporary copy of the repo ----


def _smoke_resnet(edit: Callable[[dict], None]) -> Callable[[dict], None]:
    """The resnet paper on its smoke profile, one run, `edit` applied to that profile."""

    def apply(params: dict) -> None:
        params.update(profile="smoke", seeds=[0], arms=params["arms"][:1])
        edit(params["profiles"]["smoke"])

    return apply


# case -> (edit of papers/resnet/params.yaml's smoke profile, the error line's start)
DVC_CASES = {
    "precision": (lambda p: p.update(trainer={"precision": "bogus"}), "trainer.precision: 'bogus'"),
    "milestones": (
        lambda p: p["schedule"].update(milestones=[3, 2]),
        "schedule.milestones: [3, 2]",
    ),
}


@pytest.fixture(scope="module")
def dvc_results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """`dvc repro papers/resnet` per case, in one copy of the repo's code and pipelines."""
    root = tmp_path_factory.mktemp("repo")
    ignore = shutil.ignore_patterns("runs", "results", "__pycache__", "dvc.lock")
    for name in ("common", "papers/resnet"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    for name in ("papers/__init__.py", "params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, root / name)
    env = {**child_env(), "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    dvc = [str(REPO / ".venv" / "bin" / "dvc")]
    subprocess.run([*dvc, "init", "-q", "--no-scm"], cwd=root, env=env, check=True)
    params_file = root / "papers" / "resnet" / "params.yaml"
    original = yaml.safe_load(params_file.read_text())
    results = {}
    for case, (edit, _) in DVC_CASES.items():
        params = copy.deepcopy(original)
        _smoke_resnet(edit)(params)
        params_file.write_text(yaml.safe_dump(params))
        repro = [*dvc, "repro", "papers/resnet"]
        results[case] = subprocess.run(repro, cwd=root, env=env, capture_output=True, text=True)
    return {case: (result, root / "papers" / "resnet") for case, result in results.items()}


@pytest.mark.parametrize("case", list(DVC_CASES))
def test_dvc_repro_bad_setting(case, dvc_results):
    result, paper = dvc_results[case]
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "error: " in line]
    assert len(lines) == 1 and lines[0].startswith(f"error: {DVC_CASES[case][1]}"), lines
    assert not [p for p in (paper / "runs").rglob("*") if p.is_file()]
