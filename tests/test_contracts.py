"""papers/README.md's contracts: each error it quotes is the one a paper that misses it gets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from common.config import ConfigError, build_callbacks, build_model

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = (REPO / "papers" / "README.md").read_text()
NETS = """
from torch import nn


class NoShape(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
"""


@pytest.fixture
def net_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module `contract_nets` on sys.path, holding a model that breaks the contract."""
    (tmp_path / "contract_nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "contract_nets"
    sys.modules.pop("contract_nets", None)


def _error(build, *args) -> str:
    with pytest.raises(ConfigError) as err:
        build(*args)
    return str(err.value)


def _quoted(message: str) -> None:
    assert f"`{message}`" in CONTRACTS, f"papers/README.md does not quote: {message}"


def test_a_model_without_the_data_arguments_is_told_the_contract(net_module: str) -> None:
    message = _error(build_model, {"class_path": f"{net_module}.NoShape"}, 1, 10)
    _quoted(message.replace(f"{net_module}.NoShape", "papers.x.model.Net"))


@pytest.mark.parametrize(
    "spec",
    [
        {"class_path": "papers.resnet.model.Nett"},
        {"class_path": "papers.resnet.model.CifarResNet", "depth": "x"},
        {"class_path": "papers.resnet.model.CifarResNet", "depth": 21},
    ],
)
def test_model_errors_are_quoted(spec: dict) -> None:
    message = _error(build_model, spec, 1, 10).replace("papers.resnet.model", "papers.x.model")
    _quoted(message)


def test_an_unknown_model_argument_names_it() -> None:
    spec = {"class_path": "papers.resnet.model.CifarResNet", "widht": 2}
    message = _error(build_model, spec, 1, 10).replace("CifarResNet", "Net")
    _quoted(message)


def test_a_callback_argument_of_the_wrong_type_names_it() -> None:
    spec = {"warm_up": {"class_path": "papers.resnet.callbacks.WarmUp", "lr": "x"}}
    _quoted(_error(build_callbacks, spec))
