"""`python -m common.train` and `python -m common.data` on bad input: one line, no outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from common import data, train

# case -> (params edit, train CLI overrides, fragments the error line must hold)
TRAIN_CASES: dict[str, tuple[dict[str, Any], dict[str, str], list[str]]] = {
    "unknown dataset": ({}, {"dataset": "nosuch"}, ["dataset: 'nosuch'", "imagenet, mnist"]),
    "unknown arm": ({}, {"arm": "nosuch"}, ["arm: 'nosuch'", "plain, tiny"]),
    "bad depth": ({"model": {"depth": 21}}, {}, ["model: depth: 21", "6n+2"]),
    "p_L = 0": (
        {
            "model": {
                "class_path": "papers.stochastic_depth.model.StochasticDepthResNet",
                "survival_prob_last": 0.0,
            }
        },
        {},
        ["model: survival_prob_last: 0.0", "(0, 1]"],
    ),
    "missing data": ({}, {"data": "missing.pt"}, ["data: ", "missing.pt does not exist"]),
}


def _train_args(params_file: Path, data_file: Path, out: Path, **overrides: str) -> list[str]:
    args = {
        "params": str(params_file), "arm": "tiny", "dataset": "fashion_mnist", "seed": "0",
        "data": str(data_file), "out": str(out), **overrides,
    }  # fmt: skip
    return [item for key, value in args.items() for item in (f"--{key}", value)]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, new_params, prepared_file, run_modules) -> dict[str, Any]:
    """Every bad-input case's child process, run concurrently: {case: (result, its folder)}."""
    commands, folders = [], {}
    for case, (edit, overrides, _) in TRAIN_CASES.items():
        folder = tmp_path_factory.mktemp("cli")
        params = new_params()
        network = params["networks"]["tiny"]
        for section, values in edit.items():
            network[section] = {**network.get(section, {}), **values}
        params_file = folder / "paper" / "params.yaml"
        params_file.parent.mkdir()
        params_file.write_text(yaml.safe_dump(params))
        if "data" in overrides:
            overrides = {**overrides, "data": str(folder / overrides["data"])}
        out = folder / "runs" / "tiny-fashion_mnist-s0"
        args = _train_args(params_file, prepared_file, out, **overrides)
        commands.append(("common.train", args, folder))
        folders[case] = folder
    folder = tmp_path_factory.mktemp("cli")
    commands.append(("common.data", ["nosuch", "out.pt", "--no-download"], folder))
    folders["data nosuch"] = folder
    results = run_modules(commands)
    return {case: (result, folders[case]) for case, result in zip(folders, results, strict=True)}


def _one_line_error(result, *fragments: str) -> str:
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_rejects_bad_input_in_one_line(cli_runs, case):
    result, folder = cli_runs[case]
    _one_line_error(result, *TRAIN_CASES[case][2])
    assert not (folder / "runs").exists()  # nothing half-written
    assert sorted(p.name for p in folder.iterdir()) == ["paper"]


def test_data_rejects_unknown_dataset(cli_runs):
    result, folder = cli_runs["data nosuch"]
    _one_line_error(result, "error: dataset: 'nosuch'", "cifar10", "fashion_mnist")
    assert list(folder.iterdir()) == []  # no out.pt, no temporary file


def _exit_message(main, argv: list[str]) -> str:
    """The message a CLI's `main` exits with, in-process (cheaper than a child process)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    message = info.value.code
    assert isinstance(message, str) and "\n" not in message
    return message


def test_train_missing_params_file(tmp_path, prepared_file):
    out = tmp_path / "runs" / "x"
    message = _exit_message(train.main, _train_args(tmp_path / "nope.yaml", prepared_file, out))
    assert message.startswith("error: params: ") and message.endswith("nope.yaml does not exist")
    assert not (tmp_path / "runs").exists()


def test_train_unknown_field(tmp_path, params, write_params, prepared_file):
    params["networks"]["tiny"]["optim"] = {"lrr": 0.1}
    out = tmp_path / "runs" / "x"
    message = _exit_message(train.main, _train_args(write_params(params), prepared_file, out))
    assert message.startswith("error: optim.lrr: unknown key (allowed: batch_size, lr,")
    assert not (tmp_path / "runs").exists()


def test_data_missing_raw_files_without_download(tmp_path):
    out = tmp_path / "data" / "cifar10.pt"
    argv = ["cifar10", str(out), "--raw-root", str(tmp_path / "raw"), "--no-download"]
    message = _exit_message(data.main, argv)
    assert message.startswith(f"error: cifar10: no data in {tmp_path / 'raw' / 'cifar10'}")
    assert not (tmp_path / "data").exists()
