"""common/config.py: merge order of `resolve`, one-line errors naming the field, the digest."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest

from common.config import (
    ConfigError,
    DataConfig,
    RunConfig,
    ScheduleConfig,
    load_params,
    merge,
    resolve,
)
from common.datasets import DATASETS
from common.results import run_name
from common.schema import validate
from tests.conftest import REPO


def _resolve(params: dict[str, Any], **kwargs: Any) -> RunConfig:
    args = {"paper": "tiny_paper", "arm": "tiny", "dataset": "fashion_mnist", "seed": 0}
    return resolve(params, **{**args, **kwargs})


def _config_error(params: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        _resolve(params, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_resolve_merges_defaults_profile_dataset_network_in_order(params):
    profile = params["profiles"]["default"]
    shared = {
        "optim": {"lr": 1.0, "momentum": 0.1, "batch_size": 1, "weight_decay": 0.123},
        "trainer": {"num_nodes": 3, "devices": 9},
        "wandb": {"mode": "offline", "project": "shared-project"},
    }
    profile["optim"] = {"lr": 2.0, "momentum": 0.2, "batch_size": 22}
    profile["datasets"]["fashion_mnist"] = {"optim": {"lr": 3.0, "momentum": 0.3}}
    params["networks"]["tiny"] = {"model": {"depth": 14}, "optim": {"lr": 4.0}}
    config = _resolve(params, shared=shared)

    assert config.optim.lr == 4.0  # network beats dataset
    assert config.optim.momentum == 0.3  # dataset beats profile
    assert config.optim.batch_size == 22  # profile beats the repo defaults
    assert config.optim.weight_decay == 0.123  # the repo default where nobody overrides
    assert config.trainer.num_nodes == 3 and config.trainer.devices == 1  # shared ← profile
    assert (config.wandb.mode, config.wandb.project) == ("disabled", "shared-project")  # merged
    assert config.model == {"class_path": "papers.resnet.model.CifarResNet", "depth": 14}
    assert (config.paper, config.profile, config.arm, config.dataset, config.seed) == (
        "tiny_paper", "default", "tiny", "fashion_mnist", 0,
    )  # fmt: skip
    assert config.name == "tiny-fashion_mnist-s0"
    # Fields nobody sets keep the dataclass defaults.
    assert config.data.split_seed == DataConfig().split_seed
    assert config.schedule.gamma == 0.1 and config.schedule.milestones == [1]


def test_merge_is_deep_and_does_not_mutate():
    base = {"a": {"x": 1, "y": 2}, "b": [1, 2]}
    out = merge(base, {"a": {"y": 3}, "b": [3]})
    assert out == {"a": {"x": 1, "y": 3}, "b": [3]}
    assert base == {"a": {"x": 1, "y": 2}, "b": [1, 2]}


def test_profile_switch_selects_the_other_protocol(params):
    params["profile"] = "paper"
    config = _resolve(params, dataset="cifar10")
    assert config.profile == "paper"
    assert config.data == DataConfig()  # the paper profile sets no data overrides here


def test_unknown_profile(params):
    params["profile"] = "laptop"
    message = _config_error(params)
    assert message.startswith("profile:")
    assert "'laptop'" in message and "default" in message and "paper" in message


def test_unknown_dataset(params):
    message = _config_error(params, dataset="places365")
    assert message.startswith("dataset:") and "'places365'" in message
    assert all(name in message for name in DATASETS)


def test_dataset_without_protocol_in_the_active_profile(params):
    assert "mnist" in DATASETS  # a known data set the default profile has no protocol for
    message = _config_error(params, dataset="mnist")
    assert message.startswith("dataset:")
    assert "'mnist'" in message and "'default'" in message and "fashion_mnist" in message


def test_unknown_arm(params):
    message = _config_error(params, arm="resnet9000")
    assert message.startswith("arm:")
    assert "'resnet9000'" in message and "tiny" in message and "plain" in message


@pytest.mark.parametrize("section", ["optim", "data", "schedule", "trainer"])
def test_unknown_field_in_a_section(params, section):
    params["profiles"]["default"].setdefault(section, {})["lrr"] = 0.1
    message = _config_error(params)
    assert message.startswith(f"{section}.lrr: unknown key")
    if section == "optim":
        assert "batch_size, lr, momentum, nesterov, weight_decay" in message


def test_unknown_section(params):
    params["networks"]["tiny"]["optimizer"] = {"lr": 0.1}
    message = _config_error(params)
    assert message.startswith("optimizer:") and "unknown section" in message


def test_bad_schedule_unit(params):
    params["profiles"]["default"]["schedule"]["unit"] = "epochs"
    message = _config_error(params)
    assert message.startswith("schedule.unit:") and "'epochs'" in message
    assert "epoch, step" in message


def test_bad_padding_mode(params):
    params["profiles"]["default"]["data"]["padding_mode"] = "wrap"
    message = _config_error(params)
    assert message.startswith("data.padding_mode:") and "'wrap'" in message
    assert "reflect" in message and "zeros" in message


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_bad_eval_train_epochs(params, value):
    params["profiles"]["default"]["data"]["eval_train_epochs"] = value
    message = _config_error(params)
    assert message.startswith(f"data.eval_train_epochs: {value!r} ") and "int" in message


def test_bad_normalize(params):
    params["profiles"]["default"]["data"]["normalize"] = "zca"
    message = _config_error(params)
    assert message.startswith("data.normalize:") and "mean_std" in message


def test_bad_select(params):
    params["profiles"]["default"]["select"] = "best"
    message = _config_error(params)
    assert message.startswith("select:") and "'best'" in message
    assert "last" in message and "lowest_val" in message


def test_val_size_below_zero(params):
    params["profiles"]["default"]["data"]["val_size"] = -1
    assert _config_error(params).startswith("data.val_size:")


def test_lowest_val_needs_a_validation_set(params):
    params["profiles"]["default"]["data"]["val_size"] = 0
    params["profiles"]["default"]["select"] = "lowest_val"
    assert _config_error(params).startswith("select:")


def test_missing_model_class_path(params):
    del params["profiles"]["default"]["model"]["class_path"]
    assert _config_error(params).startswith("model.class_path:")


def test_load_params_of_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^params: .*does not exist$"):
        load_params(tmp_path / "nope.yaml")


def test_milestones_are_a_list_of_positive_integers():
    assert ScheduleConfig(milestones=[3, 5]).milestones == [3, 5]
    with pytest.raises(ConfigError, match=r"^schedule.milestones\[0\]: 0 must be an integer >= 1"):
        validate(ScheduleConfig, {"milestones": [0]}, loc=("schedule",))


def test_digest_is_stable_for_equal_configs(params):
    a, b = _resolve(params), _resolve(params)
    assert a is not b and a == b
    assert re.fullmatch(r"[0-9a-f]{16}", a.digest())
    assert a.digest() == b.digest()
    # Where a run is logged does not change what it computes.
    params["profiles"]["default"]["wandb"] = {"mode": "online", "project": "elsewhere"}
    assert _resolve(params).digest() == a.digest()


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("optim", "lr", 0.051),
        ("schedule", "epochs", 3),
        ("schedule", "milestones", [2]),
        ("data", "pad", 0),
        ("model", "depth", 14),
        ("trainer", "devices", 2),
    ],
)
def test_digest_changes_with_any_setting(params, section, key, value):
    before = _resolve(params).digest()
    params["networks"]["tiny"].setdefault(section, {})[key] = value
    assert _resolve(params).digest() != before


def test_digest_changes_with_seed_and_arm(params):
    base = _resolve(params).digest()
    assert _resolve(params, seed=1).digest() != base
    params["networks"]["other"] = params["networks"]["tiny"]
    assert _resolve(params, arm="other").digest() != base


def test_resolving_and_building_a_model_does_not_import_lightning() -> None:
    """Configs resolve and networks build in a second: Lightning loads only to train."""
    code = (
        "import sys; from pathlib import Path; "
        "from common.config import build_model, load_params, resolve; "
        "params = load_params(Path('papers/resnet/params.yaml')); "
        "resolve(params, paper='resnet', arm='resnet20', dataset='fashion_mnist', seed=0); "
        "build_model({'class_path': 'papers.resnet.model.CifarResNet', 'depth': 20}, 3, 10); "
        "assert 'lightning' not in sys.modules, 'lightning imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_dvc_run_directories_are_spelt_as_run_name() -> None:
    """Each dvc.yaml names a run directory as `common.results.run_name` does (config.name), so
    DVC's outputs are the directories `fit` writes and the table reads."""
    values = {"arm": "pre-act", "dataset": "cifar10", "seed": "3"}  # an arm with a dash
    templates = {
        (path, t)
        for path in sorted(REPO.glob("papers/*/dvc.yaml"))
        for t in re.findall(r"runs/([^\s:/]*\$\{item\.[^\s:/]*)", path.read_text())
    }
    assert {path.parent.name for path, _ in templates} >= {"resnet", "stochastic_depth"}
    for path, template in templates:
        spelt = re.sub(r"\$\{item\.(\w+)\}", lambda m: values[m[1]], template)
        # A stage of one arm (node's ODE-Net analyses) writes it literally.
        arm = values["arm"] if "${item.arm}" in template else template.partition("-${")[0]
        assert spelt == run_name(arm, "cifar10", 3), f"{path}: runs/{template}"
