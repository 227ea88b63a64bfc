"""common/training.py: schedule, `fit` outputs, determinism, resumption, DDP."""

from __future__ import annotations

import csv
import json
import math
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from common.config import ConfigError, build_model
from common.data import ImageDataModule
from common.metrics import count_params
from common.results import RUN_METRICS
from common.training import (
    EVAL_TRAIN_FIELDS,
    HISTORY_FIELDS,
    History,
    MultiStep,
    fit,
    load_network,
    resolve_precision,
    select_epoch,
)
from papers.resnet.model import CifarResNet

TIMINGS = ("train_time_s", "time_per_epoch_s")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared CPU, spinning ones cost."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_history(out: Path) -> list[dict[str, float]]:
    with open(out / "history.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def without(d: dict, keys: tuple[str, ...] = TIMINGS) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def assert_close_rows(a: list[dict], b: list[dict]) -> None:
    """Equal history rows, wall time aside."""
    assert [without(r) for r in a] == [without(r) for r in b]


# ---- pure functions ----


def test_multistep_factors():
    f = MultiStep((2, 4), 0.1)
    assert [f(t) for t in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert MultiStep((), 0.1)(10**6) == 1
    g = pickle.loads(pickle.dumps(f))  # a LambdaLR function that checkpoints can pickle
    assert g(3) == pytest.approx(0.1)


def test_multistep_drives_lambda_lr():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(()))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, MultiStep((1, 3), 0.5))
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.1, 0.05, 0.05, 0.025])


def test_select_epoch():
    rows = [
        {"epoch": 1, "val_error": 5.0, "test_error": 50.0},
        {"epoch": 2, "val_error": 3.0, "test_error": 40.0},
        {"epoch": 3, "val_error": 3.0, "test_error": 45.0},
        {"epoch": 4, "val_error": 4.0, "test_error": 30.0},
    ]
    assert select_epoch(rows, "last")["epoch"] == 4
    assert select_epoch(rows, "lowest_val")["epoch"] == 2  # ties: the earlier epoch


def test_resolve_precision(monkeypatch):
    assert resolve_precision("16-mixed", "cpu") == "16-mixed"
    assert resolve_precision("32-true", "gpu") == "32-true"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = "bf16-mixed" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto", "auto") == cpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_precision("auto", "cpu") == cpu  # a GPU on the machine does not matter
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", "gpu") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", "cuda") == "16-mixed"


def test_build_model_errors_are_config_errors():
    spec = {"class_path": "papers.resnet.model.CifarResNet", "depth": 8}
    assert isinstance(build_model(spec, 1, 10), CifarResNet)
    with pytest.raises(ConfigError, match=r"^model\.class_path:"):
        build_model({"class_path": "papers.resnet.model.NoSuchNet"}, 3, 10)
    with pytest.raises(ConfigError, match=r"^model: .*depth"):
        build_model({**spec, "depth": 21}, 3, 10)
    with pytest.raises(ConfigError, match=r"^model: .*width"):
        build_model({**spec, "width": 2}, 3, 10)


# ---- warm-up, driven step by step ----


# ---- fit ----


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, prepared_file, make_config):
    """An uninterrupted 2-epoch run (seed 0) and its returned metrics."""
    out = tmp_path_factory.mktemp("full") / "run"
    return out, fit(make_config(), prepared_file, out)


def test_fit_writes_history_and_metrics(full_run, make_config):
    out, metrics = full_run
    header = (out / "history.csv").read_text().splitlines()[0]
    assert header == ",".join(HISTORY_FIELDS)
    rows = read_history(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["lr"] for r in rows] == pytest.approx([0.05, 0.005])  # milestone after epoch 1
    for row in rows:
        assert all(math.isfinite(v) for v in row.values()), row
        for key in ("train_error", "val_error", "test_error"):
            assert 0 <= row[key] <= 100
        assert row["train_time_s"] > 0

    numbers, run = (json.loads((out / f).read_text()) for f in ("metrics.json", "run.json"))
    assert run | numbers == metrics
    # DVC's metrics hold numbers only; what the run is and how it was obtained is run.json's text.
    assert all(v is None or isinstance(v, int | float) for v in numbers.values()), numbers
    assert set(numbers) == set(RUN_METRICS)
    config = make_config()
    assert metrics["config_digest"] == config.digest()
    assert (metrics["paper"], metrics["arm"], metrics["seed"]) == ("tiny_paper", "tiny", 0)
    assert metrics["precision"] == "32-true"
    assert (metrics["epochs"], metrics["steps"], metrics["train_images"]) == (2, 10, 500)
    assert metrics["params"] == count_params(CifarResNet(8, in_channels=1, num_classes=10))
    assert metrics["macs"] > 0
    assert metrics["selected_epoch"] == 2
    assert metrics["test_error"] == pytest.approx(rows[1]["test_error"], abs=1e-3)
    assert metrics["final_train_error"] == pytest.approx(rows[1]["train_error"], abs=1e-3)
    assert metrics["train_time_s"] == pytest.approx(sum(r["train_time_s"] for r in rows), 1e-4)
    assert metrics["time_per_epoch_s"] == pytest.approx(metrics["train_time_s"] / 2)
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["last.ckpt"]
    assert metrics["threads"] == 1  # TINY_PARAMS' trainer.threads, in the table's "how obtained"


def test_fit_runs_on_the_configured_threads_not_the_machines(full_run, tmp_path, prepared_file,
                                                             make_config):  # fmt: skip
    out = tmp_path / "run"
    shutil.copytree(full_run[0], out)  # finished: fit only reloads it
    torch.set_num_threads(2)
    fit(make_config(), prepared_file, out)
    assert torch.get_num_threads() == 1


def test_load_network_rebuilds_the_trained_network(full_run, prepared_file, make_config):
    """config.json + the last checkpoint give back the network that scored the final test error."""
    out, metrics = full_run
    network, config = load_network(out)
    assert config == make_config() and not network.training
    saved = json.loads((out / "config.json").read_text())
    assert (saved["input_shape"], saved["num_classes"]) == ([1, 12, 12], 10)
    data = ImageDataModule(prepared_file, config.data, batch_size=50)
    data.setup()
    images, labels = data.on_after_batch_transfer(data.test_set[range(len(data.test_set))], 0)
    with torch.no_grad():
        error = (network(images).argmax(1) != labels).float().mean().item() * 100
    assert error == pytest.approx(metrics["final_test_error"], abs=1e-3)
    with pytest.raises(ConfigError, match=r"^run: .* lacks config.json"):
        load_network(out.parent / "never_trained")


def test_checkpoint_loads_with_weights_only(full_run):
    out, metrics = full_run
    ckpt = torch.load(out / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == metrics["steps"]
    assert len(ckpt["callbacks"]["History"]["rows"]) == 2
    assert "WarmUp" not in ckpt["callbacks"]  # no warm-up asked for
    assert ckpt["run_digest"] == metrics["run_digest"]  # which run may resume from it


def test_same_seed_same_results(full_run, tmp_path, prepared_file, make_config):
    out, metrics = full_run
    again = fit(make_config(), prepared_file, tmp_path / "again")
    assert without(again) == without(metrics)
    assert_close_rows(read_history(tmp_path / "again"), read_history(out))


class Interrupted(Exception):
    pass


def _interrupt_at_epoch_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next `fit` stops (raises Interrupted) as epoch 2 starts, as a killed run would."""
    start_epoch = History.on_train_epoch_start

    def interrupt_epoch_2(self, trainer, module):
        if trainer.current_epoch == 1:
            raise Interrupted
        start_epoch(self, trainer, module)

    monkeypatch.setattr(History, "on_train_epoch_start", interrupt_epoch_2)


def test_interrupted_run_resumes_from_its_last_checkpoint(
    full_run, tmp_path, monkeypatch, prepared_file, make_config
):
    full_out, full_metrics = full_run
    config, out = make_config(), tmp_path / "run"
    _interrupt_at_epoch_2(monkeypatch)
    with pytest.raises(Interrupted):
        fit(config, prepared_file, out)
    partial = read_history(out)
    assert [r["epoch"] for r in partial] == [1]
    assert not (out / "metrics.json").exists()
    ckpt = torch.load(out / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 5  # saved at the end of epoch 1

    monkeypatch.undo()
    metrics = fit(config, prepared_file, out)
    rows = read_history(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0] == partial[0]  # epoch 1 (wall time included) came from the checkpoint
    assert metrics["steps"] == 10
    # Exactly where the uninterrupted run would have been.
    assert without(metrics) == without(full_metrics)
    assert_close_rows(rows, read_history(full_out))


def test_changed_config_discards_the_checkpoint(full_run, tmp_path, prepared_file, make_config):
    out = tmp_path / "run"
    shutil.copytree(full_run[0], out)
    config = make_config(optim={"lr": 0.02})
    assert config.digest() != full_run[1]["config_digest"]
    metrics = fit(config, prepared_file, out)
    rows = read_history(out)
    # Trained afresh under the new LR, not resumed from the finished run.
    assert [r["lr"] for r in rows] == pytest.approx([0.02, 0.002])
    assert metrics["steps"] == 10 and metrics["config_digest"] == config.digest()
    ckpt = torch.load(out / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["run_digest"] == metrics["run_digest"] != full_run[1]["run_digest"]


def test_lowest_val_selection_in_fit(tmp_path, prepared_file, make_config):
    metrics = fit(make_config(select="lowest_val"), prepared_file, tmp_path)
    rows = read_history(tmp_path)
    best = min(rows, key=lambda r: (r["val_error"], r["epoch"]))
    assert metrics["selected_epoch"] == best["epoch"]
    assert metrics["test_error"] == pytest.approx(best["test_error"], abs=1e-3)
    assert metrics["final_test_error"] == pytest.approx(rows[-1]["test_error"], abs=1e-3)


@pytest.mark.parametrize("select", ["lowest_val", "last"])
def test_test_curve_subset_reports_the_selected_weights_on_the_whole_test_set(
    tmp_path, prepared_file, make_config, select
):
    """A per-epoch test curve on 50 of 200 images changes no reported number: the selected
    epoch's weights are tested once on all 200, as the whole-set curve measures them."""
    whole = fit(make_config(select=select), prepared_file, tmp_path / "whole")
    curve = fit(
        make_config(select=select, data={"test_curve_size": 50}), prepared_file, tmp_path / "curve"
    )
    assert (curve["test_images"], curve["test_curve_images"]) == (200, 50)
    assert curve["selected_epoch"] == whole["selected_epoch"]
    assert curve["test_error"] == pytest.approx(whole["test_error"], abs=1e-3)
    rows = read_history(tmp_path / "curve")
    assert all(round(r["test_error"] * 50 / 100, 3).is_integer() for r in rows)  # 50 images
    assert (tmp_path / "curve" / "ckpt" / "best.ckpt").exists() is (select == "lowest_val")


def test_testing_the_selected_epoch_keeps_the_whole_history(tmp_path, prepared_file, make_config):
    """An epoch before the last is selected: after epoch 1 the LR jumps 1e12-fold, the weights
    overflow to NaN, and epochs 2 and 3 predict alike, so the tie goes to the earlier (a 1000-fold
    jump left a chance-level net whose epoch 3 could win). Testing the selected weights must not
    cut the history, the epoch count or the training time back to that epoch."""
    schedule = {"epochs": 3, "milestones": [1], "gamma": 1e12}
    config = make_config(select="lowest_val", schedule=schedule, data={"test_curve_size": 50})
    metrics = fit(config, prepared_file, tmp_path)
    rows = read_history(tmp_path)
    assert metrics["selected_epoch"] < 3 and metrics["epochs"] == len(rows) == 3
    assert metrics["final_train_error"] == pytest.approx(rows[-1]["train_error"], abs=1e-3)
    # history.csv keeps 6 significant digits: each row within 5e-6 of its value, relatively
    assert metrics["train_time_s"] == pytest.approx(sum(r["train_time_s"] for r in rows), rel=1e-5)


class CountingNet(nn.Module):
    """A linear classifier that reports the images it has seen since its last report."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc, self.seen = nn.Linear(in_channels, num_classes), 0

    def forward(self, x: Tensor) -> Tensor:
        self.seen += len(x)
        return self.fc(x.mean((2, 3)))

    def metrics(self) -> dict[str, float]:
        seen, self.seen = self.seen, 0
        return {"images": seen}


def test_model_metrics_reach_the_history(tmp_path, prepared_file, make_config):
    """model.metrics() after every training and evaluation step: columns after the fixed ones."""
    model = {"class_path": "tests.test_training.CountingNet"}
    fit(make_config("counting", model=model, data={"test_size": 150}), prepared_file, tmp_path)
    with open(tmp_path / "history.csv", newline="") as f:
        header = f.readline().strip().split(",")
    assert header == [*HISTORY_FIELDS, "test_images", "train_images", "val_images"]
    for row in read_history(tmp_path):  # per-step means: 5 batches of 100; 100; 100 and 50
        assert (row["train_images"], row["val_images"]) == (100, 100)
        assert row["test_images"] == pytest.approx(150 / 2)


def test_eval_train_is_the_final_network_on_the_unaugmented_training_set(
    tmp_path, prepared_file, make_config
):
    """data.eval_train_epochs: in the last epochs, `train_eval_error` is that epoch's network on
    every training image in evaluation mode (no crop or flip, batch norm's running statistics);
    before them it is not computed."""
    fit(make_config(data={"eval_train_epochs": 1}), prepared_file, tmp_path)
    with open(tmp_path / "history.csv", newline="") as f:
        header = f.readline().strip().split(",")
    assert header == [*HISTORY_FIELDS, *EVAL_TRAIN_FIELDS]
    network, config = load_network(tmp_path)
    data = ImageDataModule(prepared_file, config.data, batch_size=50)
    data.setup()
    assert data.eval_splits == ("val", "test", "train_eval")
    images, labels = data.on_after_batch_transfer(data.train_set[range(len(data.train_set))], 0)
    with torch.no_grad():
        error = (network(images).argmax(1) != labels).float().mean().item() * 100
    rows = read_history(tmp_path)
    assert len(rows) == 2 and math.isnan(rows[0]["train_eval_error"])
    assert rows[-1]["train_eval_error"] == pytest.approx(error, abs=1e-3)
    assert rows[-1]["train_eval_error"] != rows[-1]["train_error"]  # not the training-mode error


def test_max_steps_mid_epoch_still_evaluates_the_final_model(tmp_path, prepared_file, make_config):
    metrics = fit(make_config(schedule={"epochs": 3, "max_steps": 7}), prepared_file, tmp_path)
    rows = read_history(tmp_path)
    assert metrics["steps"] == 7 and [r["epoch"] for r in rows] == [1, 2]
    # Epoch 2 stopped after 2 of 5 batches; its errors are the final model's, not epoch 1's.
    assert rows[1]["val_loss"] != rows[0]["val_loss"]
    assert rows[1]["test_loss"] != rows[0]["test_loss"]


# ---- DDP ----


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_two_cpu_processes(tmp_path, params, prepared_file, write_params, run_module):
    profile = params["profiles"]["default"]
    profile["trainer"].update(devices=2, strategy="ddp")
    profile["optim"]["batch_size"] = 50
    profile["schedule"].update(epochs=1, milestones=[])
    params_file = write_params(params)
    out = tmp_path / "run"
    result = run_module(
        "common.train", "--params", params_file, "--arm", "tiny", "--dataset", "fashion_mnist",
        "--seed", 0, "--data", prepared_file, "--out", out, cwd=tmp_path, timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "ckpt",
        "config.json",
        "history.csv",
        "metrics.json",
        "run.json",
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    # 500 training images over 2 ranks at batch 50: 5 steps each (one process would take 10).
    assert (metrics["epochs"], metrics["steps"], metrics["train_images"]) == (1, 5, 500)
    assert 0 <= metrics["test_error"] <= 100 and 0 <= metrics["final_train_error"] <= 100
    rows = read_history(out)
    assert len(rows) == 1 and all(math.isfinite(v) for v in rows[0].values())
    assert metrics["test_error"] == pytest.approx(rows[0]["test_error"], abs=1e-3)
    assert torch.load(out / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 5
