"""Shared fixtures: a tiny prepared data set, a tiny paper params dict, and a CLI runner."""

from __future__ import annotations

import copy
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from xdist.scheduler import LoadScopeScheduling

from common.config import RunConfig, merge, resolve
from common.data import SPLITS, save_prepared

REPO = Path(__file__).resolve().parents[1]

# A paper's params as `common.config.resolve` reads them, shrunk to seconds on a CPU:
# CIFAR ResNet-8 (n = 1) on 12x12 images, 500 train / 100 val / 200 test, batch 100, 2 epochs.
TINY_PARAMS: dict[str, Any] = {
    "profile": "default",
    "datasets": ["fashion_mnist"],
    "seeds": [0],
    "arms": ["tiny"],
    "networks": {
        "tiny": {"model": {"depth": 8}},
        "plain": {"model": {"depth": 8, "plain": True}},
    },
    "profiles": {
        "default": {
            "model": {"class_path": "papers.resnet.model.CifarResNet"},
            "data": {"val_size": 100, "pad": 2, "flip": True},
            "optim": {"batch_size": 100, "lr": 0.05, "momentum": 0.9, "weight_decay": 1.0e-4},
            "schedule": {"unit": "epoch", "epochs": 2, "milestones": [1], "gamma": 0.1},
            "select": "last",
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "precision": "32-true",  # "auto" would pick bf16 on CPUs with avx512_bf16
                "threads": 1,  # two test processes share the two cores
                "channels_last": False,
            },
            "wandb": {"mode": "disabled"},
            "datasets": {"fashion_mnist": {}},
        },
        "paper": {
            "model": {"class_path": "papers.resnet.model.CifarResNet"},
            "optim": {"batch_size": 128, "lr": 0.1},
            "schedule": {"epochs": 164},
            "datasets": {"cifar10": {}},
        },
    },
}


def structured_images(
    n: int, shape: tuple[int, int, int], num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) of noise plus a bright patch whose place encodes the label."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = torch.randint(0, 70, (n, *shape), generator=g, dtype=torch.uint8)
    c, h, w = shape
    for i, k in enumerate(labels.tolist()):
        row, col = divmod(k, 5)
        y, x = 1 + row * (h // 2), 1 + col * ((w - 2) // 5)
        images[i, k % c, y : y + h // 3, x : x + 2] += 150
    return images, labels


def assert_trains_on_fashion_mnist_and_pickles(model: torch.nn.Module) -> None:
    """A stochastic network runs on 1x28x28 in training mode, and its evaluation-mode outputs
    survive pickling and deepcopy (DDP and checkpoints copy it)."""
    x = torch.randn(2, 1, 28, 28)
    assert model.train()(x).shape == (2, 10)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
            torch.testing.assert_close(clone(x), expected)


def write_prepared(path: Path, shape: tuple[int, int, int], n_train: int, n_test: int) -> Path:
    """A data file in the format `common.data.prepare` writes."""
    train_images, train_labels = structured_images(n_train, shape, 10, seed=1)
    test_images, test_labels = structured_images(n_test, shape, 10, seed=2)
    tensors = (train_images, train_labels, test_images, test_labels)
    splits = dict(zip(SPLITS, tensors, strict=True))
    save_prepared({"name": "fashion_mnist", "num_classes": 10, **splits}, path)
    return path


@pytest.fixture(scope="session")
def prepared_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 train and 200 test 1x12x12 images, 10 classes."""
    return write_prepared(tmp_path_factory.mktemp("data") / "tiny.pt", (1, 12, 12), 600, 200)


@pytest.fixture(scope="session")
def prepared_rgb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 train and 100 test 3x16x16 images, 10 classes."""
    return write_prepared(tmp_path_factory.mktemp("data") / "rgb.pt", (3, 16, 16), 300, 100)


@pytest.fixture(scope="session")
def new_params() -> Callable[[], dict[str, Any]]:
    """A factory of fresh deep copies of TINY_PARAMS (for fixtures wider than a test)."""
    return lambda: copy.deepcopy(TINY_PARAMS)


@pytest.fixture
def params(new_params: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A fresh deep copy of TINY_PARAMS, free to edit."""
    return new_params()


@pytest.fixture(scope="session")
def make_config() -> Callable[..., RunConfig]:
    """The RunConfig of TINY_PARAMS with `sections` (e.g. optim={"lr": 0.02}) over the arm."""

    def make(arm: str = "tiny", seed: int = 0, **sections: dict[str, Any]) -> RunConfig:
        params = copy.deepcopy(TINY_PARAMS)
        params["networks"][arm] = merge(params["networks"].get(arm, {}), sections)
        return resolve(params, paper="tiny_paper", arm=arm, dataset="fashion_mnist", seed=seed)

    return make


@pytest.fixture
def write_params(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Write a params dict as `params.yaml` in a fresh folder; returns its path."""

    def write(params: dict[str, Any], name: str = "tiny_paper") -> Path:
        path = tmp_path / name / "params.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        return path

    return write


def child_env() -> dict[str, str]:
    """Environment for child processes: no W&B network access, no GPUs, the repo importable."""
    env = dict(os.environ)
    env.update(WANDB_MODE="disabled", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_module(module: str, *args: Any, cwd: Path) -> subprocess.Popen:
    """Start `python -m MODULE ARGS...` in a child process, capturing its output as text."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=child_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """Wait for a started child (killing it on timeout) and return its result."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def run_module() -> Callable[..., subprocess.CompletedProcess]:
    """Run `python -m MODULE ARGS...` in a child process to the end; returns its result."""

    def run(module: str, *args: Any, cwd: Path, timeout: float = 120) -> Any:
        return finish(start_module(module, *args, cwd=cwd), timeout)

    return run


@pytest.fixture(scope="session")
def run_modules() -> Callable[..., list[subprocess.CompletedProcess]]:
    """Run several `(module, args, cwd)` children at once (each mostly imports torch)."""

    def run(commands: list[tuple[str, list[Any], Path]], timeout: float = 240) -> list:
        started = [start_module(module, *args, cwd=cwd) for module, args, cwd in commands]
        try:
            return [finish(process, timeout) for process in started]
        finally:
            for process in started:
                if process.poll() is None:
                    process.kill()
                    process.communicate()

    return run


def work_unit(nodeid: str) -> str:
    """What a test process takes at a time: a whole test file, except that each paper's
    end-to-end tests (test_pipelines.py's, parametrized by paper) are a unit of their own: they
    share that paper's smoke `dvc repro`, which the process runs when the first of them asks."""
    file, _, test = nodeid.partition("::")
    paper = re.fullmatch(r"\w+\[(\w+)\]", test)
    return f"{file}::{paper[1]}" if file.endswith("tests/test_pipelines.py") and paper else file


class WorkUnitScheduling(LoadScopeScheduling):
    """xdist's `loadscope` on `work_unit`s, sent out in collection order."""

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> WorkUnitScheduling:
    return WorkUnitScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Units with slow tests first, so that no test process is left with them when the other is
    done; each unit's tests stay together and in order."""
    units = [work_unit(item.nodeid) for item in items]
    slow = {u for u, item in zip(units, items, strict=True) if item.get_closest_marker("slow")}
    first = {u: i for i, u in reversed(list(enumerate(units)))}
    order = sorted(range(len(items)), key=lambda i: (units[i] not in slow, first[units[i]], i))
    items[:] = [items[i] for i in order]
