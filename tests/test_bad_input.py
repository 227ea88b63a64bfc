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

from common import check, data, regime, table, train
from common.config import ConfigError
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
    "unknown field": (_network(optim={"lrr": 0.1}), "optim.lrr: unknown key", ["batch_size"]),
    "no profiles": (_drop("profiles"), "profiles: missing", ["default"]),
    "unknown profile": (_set("profile", "nope"), "profile: 'nope'", ["default, paper"]),
    "no seeds": (_set("seeds", []), "seeds: must be a non-empty list", []),
    # Issue 18: required fields are required; a subset larger than the data is an error.
    "no schedule": (
        lambda p: p["profiles"]["default"].pop("schedule"),
        "schedule.epochs: missing in profile 'default'",
        ["required"],
    ),
    "no lr": (
        lambda p: p["profiles"]["default"]["optim"].pop("lr"),
        "optim.lr: missing",
        ["required"],
    ),
    "train_size beyond the data set": (
        _network(data={"train_size": 100000}),
        "data.train_size: 100000 exceeds the 59900 training images of fashion_mnist",
        ["omit it"],
    ),
    "train_size beyond the prepared file": (
        _network(data={"train_size": 550}),  # the tiny file: 600 - 100 for validation
        "data.train_size: 550 exceeds the 500 training images",
        [],
    ),
    "test_size beyond the data set": (
        _network(data={"test_size": 50000}),
        "data.test_size: 50000 exceeds the 10000 test images of fashion_mnist",
        [],
    ),
    "threads 0": (_network(trainer={"threads": 0}), "trainer.threads: 0", [">= 1"]),
    "strategy": (_network(trainer={"strategy": "bogus"}), "trainer.strategy: 'bogus'", ["ddp"]),
    "seed text": (_set("seeds", ["a"]), "seeds[0]: 'a' is not of type int", []),
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


def test_train_duplicate_key(tmp_path, params, prepared_file, run_dir):
    """Issue 18: `lr: 0.05, lr: 0.5` trained at 0.5 over a finished run; now it is one line."""
    text = yaml.safe_dump(params).replace("lr: 0.05", "lr: 0.05\n      lr: 0.5", 1)
    assert yaml.safe_load(text)["profiles"]["default"]["optim"]["lr"] == 0.5  # PyYAML's last
    before = _snapshot(tmp_path / "runs")
    message = _train(tmp_path, text, prepared_file, run_dir, "params: ")
    assert "key 'lr' given twice in one mapping" in message
    assert _snapshot(tmp_path / "runs") == before


def test_train_accelerator_absent_from_the_machine(tmp_path, params, prepared_file, run_dir,
                                                   monkeypatch):  # fmt: skip
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    params["networks"]["tiny"]["trainer"] = {"accelerator": "gpu"}
    before = _snapshot(tmp_path / "runs")
    start = "trainer.accelerator: 'gpu' is not on this machine (allowed here: auto, cpu"
    _train(tmp_path, yaml.safe_dump(params), prepared_file, run_dir, start)
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
        (_set("seeds", []), "seeds: must be a non-empty list"),
        (_set("arms", None), "arms: None"),
        (_set("datasets", ["nosuch"]), "datasets[0]: 'nosuch'"),
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


# ---- `common.check`: a paper's whole configuration, before anything runs (issue 18) ----


def _row(i: int, **ours: Any) -> Callable[[dict], None]:
    return lambda published: published["rows"][i]["ours"].update(ours)


def _text(old: str, new: str) -> tuple[str, str]:
    """An edit of the file's text (a duplicate key cannot be written through a dict)."""
    return old, new


# case -> (paper, file, edit of its YAML as a dict or (old, new) of its text, the error's start)
CHECK_CASES: dict[str, tuple[str, str, Any, str]] = {
    "published metric misspelt": (
        "stochastic_depth", "published.yaml", _row(0, metric="test_eror"),
        "published.yaml rows[0] (cifar10_constant).ours.metric: 'test_eror' is not one of",
    ),
    "published arm not a network": (
        "stochastic_depth", "published.yaml", _row(0, arm="constnat"),
        "published.yaml rows[0] (cifar10_constant).ours.arm: 'constnat' is not one of",
    ),
    "published difference arm": (
        "stochastic_depth", "published.yaml", _row(7, saving=["stochastic", "const"]),
        "published.yaml rows[7] (time_saving).ours.saving: 'const' is not one of",
    ),
    "published duplicate key": (
        "stochastic_depth", "published.yaml", _text("    published: 27.0\n",
                                                    "    published: 27.0\n    published: 50\n"),
        "paper: papers/stochastic_depth/published.yaml is not valid YAML: key 'published' given "
        "twice in one mapping (line 57)",
    ),
    "params duplicate key": (
        "stochastic_depth", "params.yaml", _text("seeds: [0, 1, 2]", "seeds: [0, 1, 2]\nseeds: []"),
        "params: papers/stochastic_depth/params.yaml is not valid YAML: key 'seeds' given twice",
    ),
    "regime arm": (
        "stochastic_depth", "params.yaml",
        lambda p: p["regime"]["criteria"][0].update(arms=["constnat"]),
        "regime.criteria[0].arms (trained arms): 'constnat' is not one of",
    ),
    "regime threshold": (
        "stochastic_depth", "params.yaml",
        lambda p: p["regime"]["criteria"][0].update(max_train_error="five"),
        "regime.criteria[0].max_train_error: 'five'",
    ),
    "profile without schedule": (
        "stochastic_depth", "params.yaml", lambda p: p["profiles"]["default"].pop("schedule"),
        "schedule.epochs: missing in profile 'default' for arm 'constant'",
    ),
    "strategy": (
        "stochastic_depth", "params.yaml",
        lambda p: p["profiles"]["default"].update(trainer={"strategy": "dpp"}),
        "trainer.strategy: 'dpp' is not one of",
    ),
    "delete_ks beyond the blocks": (
        "resnets_as_ensembles", "params.yaml",
        lambda p: p["analyses"]["default"].update(delete_ks=[1, 30]),
        "analyses.default.delete_ks (arm resnet): 30 exceeds the 25 deletable blocks",
    ),
    "reorder_ks beyond the pairs": (
        "resnets_as_ensembles", "params.yaml",
        lambda p: p["analyses"]["default"].update(reorder_ks=[100]),
        "analyses.default.reorder_ks (arm resnet): 100 exceeds the 92 swappable pairs",
    ),
    "fig3 tolerance": (
        "node", "params.yaml", lambda p: p["analysis"]["default"]["fig3"].update(tolerances=[-1]),
        "analysis fig3.tolerances: -1 must be a number > 0",
    ),
}  # fmt: skip


def _edited_paper(root: Path, paper: str, file: str, edit: Any) -> Path:
    """A copy of papers/<paper> under `root` (named so: its checks module is imported by
    name), with `edit` applied to `file`."""
    folder = root / "papers" / paper
    shutil.copytree(REPO / "papers" / paper, folder, ignore=shutil.ignore_patterns(*OUTPUTS))
    path = folder / file
    if isinstance(edit, tuple):
        old, new = edit
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new, 1))
    else:
        content = yaml.safe_load(path.read_text())
        edit(content)
        path.write_text(yaml.safe_dump(content, sort_keys=False))
    return folder


OUTPUTS = ("runs", "results", "__pycache__", "dvc.lock")


@pytest.mark.parametrize("case", list(CHECK_CASES))
def test_check_bad_setting(case, tmp_path, monkeypatch):
    paper, file, edit, start = CHECK_CASES[case]
    folder = _edited_paper(tmp_path, paper, file, edit)
    monkeypatch.chdir(tmp_path)  # the stage's working directory: the repo root
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    _one_line(check.main, [f"papers/{paper}"], start)
    assert not (folder / "results").exists()


def test_check_passes_every_paper_as_committed(tmp_path, monkeypatch):
    """Every paper passes its check stage, but a freshly scaffolded one (committable as it is,
    README), whose default profile is refused until its regime is stated, and for that only."""
    monkeypatch.chdir(REPO)
    for paper in sorted(p.parent.name for p in REPO.glob("papers/*/published.yaml")):
        folder = Path("papers") / paper
        claim = yaml.safe_load((folder / "params.yaml").read_text())["regime"]["claim"]
        if str(claim).startswith(regime.PLACEHOLDER):
            with pytest.raises(ConfigError, match=r"^regime: still the scaffold's placeholder"):
                check.check_paper(folder)
        else:
            check.check_runs(folder, check.check_paper(folder)[0], {})


# ---- through `dvc repro`, in one temporary copy of the repo ----


def _smoke(edit: Callable[[dict], None]) -> Callable[[dict], None]:
    """An edit of papers/resnet/params.yaml's smoke profile."""
    return lambda params: edit(params["profiles"]["smoke"])


# case -> (file of papers/resnet, edit of it, the error's start)
DVC_CASES: dict[str, tuple[str, Callable[[dict], None], str]] = {
    "precision": (
        "params.yaml", _smoke(lambda p: p.update(trainer={"precision": "bogus"})),
        "profiles.smoke.trainer.precision: 'bogus'",
    ),
    "milestones": (
        "params.yaml", _smoke(lambda p: p["schedule"].update(milestones=[3, 2])),
        "profiles.smoke.schedule.milestones: [3, 2]",
    ),
    # Issue 18: before, these failed only in the table stage, after training.
    "published metric": (
        "published.yaml", lambda p: p["rows"][6]["ours"].update(metric="test_eror"),
        "published.yaml rows[6] (cifar10_resnet20).ours.metric: 'test_eror'",
    ),
    "regime": (
        "params.yaml", lambda p: p.update(regime={"claim": "x", "criteria": []}),
        "regime.criteria: must be a non-empty list",
    ),
}  # fmt: skip

# A finished run's outputs and the key table, which a typo must leave where they are.
FINISHED = ("runs/resnet20-fashion_mnist-s0/metrics.json", "runs/resnet20-fashion_mnist-s0/"
            "history.csv", "results/table.md")  # fmt: skip


@pytest.fixture(scope="module")
def dvc_results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, dict]]:
    """`dvc repro papers/resnet` per case, in one copy of the repo's code and pipelines, over a
    finished run's outputs: the result and what became of those outputs."""
    root = tmp_path_factory.mktemp("repo")
    ignore = shutil.ignore_patterns(*OUTPUTS)
    for name in ("common", "papers/resnet"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    (root / "data").mkdir()
    for name in ("papers/__init__.py", "params.yaml", "dvc.yaml", "data/dvc.yaml"):
        shutil.copy(REPO / name, root / name)
    env = {**child_env(), "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    dvc = [str(REPO / ".venv" / "bin" / "dvc")]
    subprocess.run([*dvc, "init", "-q", "--no-scm"], cwd=root, env=env, check=True)
    paper = root / "papers" / "resnet"
    files = ("params.yaml", "published.yaml")
    original = {name: yaml.safe_load((paper / name).read_text()) for name in files}
    original["params.yaml"].update(profile="smoke", seeds=[0], arms=["resnet20"])  # one run
    original["params.yaml"]["regime"]["criteria"][0]["arms"] = ["resnet20"]  # trained arms only
    results = {}
    for case, (file, edit, _) in DVC_CASES.items():
        for name, content in copy.deepcopy(original).items():
            if name == file:
                edit(content)
            (paper / name).write_text(yaml.safe_dump(content))
        for name in FINISHED:
            (paper / name).parent.mkdir(parents=True, exist_ok=True)
            (paper / name).write_text(f"{name} of a finished run\n")
        repro = [*dvc, "repro", "papers/resnet"]
        result = subprocess.run(repro, cwd=root, env=env, capture_output=True, text=True)
        kept = {n: (paper / n).is_file() and (paper / n).read_text() for n in FINISHED}
        results[case] = result, kept
    return results


@pytest.mark.parametrize("case", list(DVC_CASES))
def test_dvc_repro_bad_setting(case, dvc_results):
    """One line from the check stage, before any training stage ran or lost its outputs."""
    result, kept = dvc_results[case]
    output = result.stdout + result.stderr
    assert result.returncode != 0
    lines = [line for line in output.splitlines() if "error: " in line]
    assert len(lines) == 1 and lines[0].startswith(f"error: {DVC_CASES[case][2]}"), lines
    assert "dvc.yaml:check'" in output and "dvc.yaml:train" not in output, output
    assert kept == {name: f"{name} of a finished run\n" for name in FINISHED}
