"""The GPU path: data on the device, bf16 and fp32 steps, channels_last, determinism, resume, DDP.

Each test runs on "cuda" where torch sees a GPU and is skipped (not failed) elsewhere; those whose
logic runs on a CPU as well are parametrized over both devices, so the suite checks the tests
themselves. `benchmarks/gpu_check.sh` runs this file on a lent GPU machine.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy

from common import training
from common.config import ConfigError, DataConfig, RunConfig, check_machine
from common.data import ImageDataModule
from common.training import History, deterministic_mode, fit

GPUS = torch.cuda.device_count()
NEEDS_CUDA = pytest.mark.skipif(
    GPUS == 0, reason="no CUDA GPU here (benchmarks/gpu_check.sh runs it on one)"
)
DEVICES = ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)]
ACCELERATOR = {"cpu": "cpu", "cuda": "gpu"}  # trainer.accelerator for each device
TIMINGS = ("train_time_s", "time_per_epoch_s")
NONDETERMINISTIC = "does not have a deterministic implementation"


@pytest.fixture(autouse=True)
def restore_torch_flags() -> Iterator[None]:
    """A GPU `fit` turns on deterministic algorithms process-wide: later tests must not run so."""
    flags = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=warn_only)
    torch.backends.cudnn.benchmark = flags[1]
    torch.set_num_threads(threads)
    if GPUS:
        torch.cuda.set_sync_debug_mode(0)


def config_on(make_config: Callable[..., RunConfig], device: str, **trainer: Any) -> RunConfig:
    """TINY_PARAMS' run on `device` (fp32, contiguous unless `trainer` says otherwise)."""
    return make_config(trainer={"accelerator": ACCELERATOR[device], **trainer})


def as_trained(make_config: Callable[..., RunConfig], device: str) -> RunConfig:
    """On a GPU, TINY_PARAMS' run as the paper profiles train there (precision `auto`, that is
    bf16-mixed, and channels_last); on a CPU, fp32 and contiguous (cheap)."""
    if device == "cuda":
        return config_on(make_config, device, precision="auto", channels_last=True)
    return config_on(make_config, device)


def read_history(out: Path) -> list[dict[str, float]]:
    with open(out / "history.csv", newline="") as f:
        return [
            {k: float(v) for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(f)
        ]


def without_timings(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in TIMINGS}


# ---- the data module: batches and augmentation on the device ----


def train_batch(data_file: Path, device: str, batch: int = 50) -> tuple[ImageDataModule, tuple]:
    """The DataModule (set up, training) and its first training batch, moved to `device` as
    Lightning moves it (asynchronously)."""
    data = ImageDataModule(data_file, DataConfig(val_size=50, pad=2), batch)
    data.setup("fit")
    data.trainer = SimpleNamespace(training=True)  # the hook augments only while training
    images, labels = next(iter(data.train_dataloader()))
    return data, (images.to(device, non_blocking=True), labels.to(device, non_blocking=True))


@pytest.mark.parametrize("device", DEVICES)
def test_batches_are_augmented_on_the_device(device, prepared_rgb_file):
    data, (images, labels) = train_batch(prepared_rgb_file, device)
    torch.manual_seed(0)
    x, y = data.on_after_batch_transfer((images, labels), 0)
    assert (x.device.type, y.device.type, x.dtype) == (device, device, torch.float32)
    assert x.shape == images.shape and torch.equal(y, labels)
    # Undo the normalisation: each image is its original translated by up to `pad` pixels
    # (zeros shifted in) and maybe flipped: one of the (2 pad + 1)² × 2 candidates.
    mean, std = data.mean.to(device), data.std.to(device)
    pixels = ((x * std + mean) * 255).round()
    pad = data.config.pad
    padded = F.pad(images.float(), (pad, pad, pad, pad))
    h, w = images.shape[-2:]
    shifts = [padded[..., dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1)
              for dx in range(2 * pad + 1)]  # fmt: skip
    candidates = torch.stack([*shifts, *(s.flip(-1) for s in shifts)], 1)  # (B, K, C, H, W)
    matches = (candidates == pixels[:, None]).flatten(2).all(-1)
    assert matches.any(1).all(), "an augmented image is no translation or flip of its original"
    assert not matches[:, (2 * pad + 1) ** 2 // 2].all(), "no image was moved: no augmentation"
    torch.manual_seed(0)
    again, _ = data.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(again, x)  # the device's generator, seeded, draws the same crops


@NEEDS_CUDA
def test_the_augmentation_hook_makes_no_host_round_trip(prepared_rgb_file):
    """A synchronising call (a copy from or to pageable host memory, `.item()`) stalls the host
    until the GPU has drained its queue, every batch: the GPU then idles while the host prepares
    the next step. `set_sync_debug_mode("error")` turns each such call into an error."""
    data, batch = train_batch(prepared_rgb_file, "cuda")
    data.on_after_batch_transfer(batch, 0)  # a first call may set up what it keeps on the device
    torch.cuda.set_sync_debug_mode("error")
    try:
        x, _ = data.on_after_batch_transfer(batch, 1)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert x.is_cuda


class SyncProbe(Callback):
    """Makes every host-device synchronisation an error from the end of the second training step
    to the end of the last but one: the data's fetch, copy and augmentation, the forward,
    backward and optimizer step of the steps in between, and Lightning's own work around them."""

    def __init__(self, batches: int) -> None:
        self.batches, self.checked = batches, 0

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        batch_idx = args[-1]
        self.checked += torch.cuda.get_sync_debug_mode() != 0  # this step ran under the probe
        on = trainer.current_epoch == 0 and 1 <= batch_idx < self.batches - 2
        torch.cuda.set_sync_debug_mode("error" if on else 0)


@NEEDS_CUDA
def test_training_steps_make_no_host_round_trip(tmp_path, prepared_file, make_config, monkeypatch):
    probe = SyncProbe(batches=5)  # TINY_PARAMS: 500 training images, batch 100
    config = config_on(make_config, "cuda", precision="bf16-mixed", channels_last=True)
    monkeypatch.setattr(training, "console_callbacks", lambda last_row: [probe])
    try:
        fit(config, prepared_file, tmp_path / "run")
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert probe.checked == 2


# ---- training steps: precision, memory format, device ----


class StepProbe(Callback):
    """What the first training step saw: its batch, the network's input and output."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx:
            return
        images, labels = batch
        self.seen.update(batch=(images.device.type, images.dtype, labels.device.type))
        first_conv = next(m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d))
        weight = first_conv.weight
        self.seen["weight_channels_last"] = weight.is_contiguous(memory_format=torch.channels_last)
        self.seen["deterministic"] = torch.are_deterministic_algorithms_enabled()
        hooks = [
            module.model.register_forward_pre_hook(self._input),
            module.model.register_forward_hook(self._output),
        ]
        self.seen["hooks"] = hooks

    def _input(self, model, args) -> None:
        self.seen["input_channels_last"] = args[0].is_contiguous(memory_format=torch.channels_last)

    def _output(self, model, args, output) -> None:
        self.seen["logits"] = (output.device.type, output.dtype)
        for hook in self.seen.pop("hooks"):
            hook.remove()

    def on_before_backward(self, trainer, module, loss) -> None:
        self.seen.setdefault("loss", (loss.dtype, math.isfinite(loss.item())))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("precision", "channels_last", "logits"),
    [("32-true", False, torch.float32), ("bf16-mixed", True, torch.bfloat16)],
    ids=["fp32-contiguous", "bf16-channels_last"],
)
def test_training_step_precision_and_memory_format(
    device, precision, channels_last, logits, tmp_path, prepared_rgb_file, make_config, monkeypatch
):
    probe = StepProbe()
    monkeypatch.setattr(training, "console_callbacks", lambda last_row: [probe])
    config = config_on(
        make_config, device, precision=precision, channels_last=channels_last,
        limit_train_batches=2, limit_val_batches=1,
    )  # fmt: skip
    metrics = fit(config, prepared_rgb_file, tmp_path / "run")
    seen = probe.seen
    assert seen["batch"] == (device, torch.float32, device)
    assert seen["logits"] == (device, logits)
    assert seen["loss"] == (torch.float32, True)  # the loss is computed in fp32 under autocast
    assert seen["weight_channels_last"] is channels_last  # 3 input channels: the formats differ
    assert seen["input_channels_last"] is channels_last
    assert seen["deterministic"] is bool(deterministic_mode(ACCELERATOR[device]))
    assert metrics["precision"] == precision
    assert metrics["device"].startswith("gpu-" if device == "cuda" else "cpu-")
    assert all(math.isfinite(v) for v in read_history(tmp_path / "run")[0].values())


# ---- same seed, same metrics; kill and resume ----


def _fit_recording_warnings(config: RunConfig, data: Path, out: Path) -> tuple[dict, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = fit(config, data, out)
    return metrics, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory, prepared_file, make_config) -> Callable[[str], tuple]:
    """Per device, an uninterrupted 2-epoch run of TINY_PARAMS (`as_trained`): its folder,
    metrics and the warnings it raised; made on first use."""
    runs: dict[str, tuple[Path, dict, list]] = {}

    def run(device: str) -> tuple[Path, dict, list]:
        if device not in runs:
            out = tmp_path_factory.mktemp(f"full_{device}") / "run"
            runs[device] = (out, *_fit_recording_warnings(as_trained(make_config, device),
                                                          prepared_file, out))  # fmt: skip
        return runs[device]

    return run


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_metrics_under_the_devices_deterministic_mode(
    device, full_runs, tmp_path, prepared_file, make_config
):
    out, metrics, caught = full_runs(device)
    again, caught_again = _fit_recording_warnings(
        as_trained(make_config, device), prepared_file, tmp_path / "again"
    )
    assert without_timings(again) == without_timings(metrics)
    assert read_history(tmp_path / "again") == read_history(out)
    # Under deterministic mode "warn", an op without a deterministic kernel only warns.
    assert not [m for m in caught + caught_again if NONDETERMINISTIC in m]


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("device", DEVICES)
def test_killed_run_resumes_to_the_uninterrupted_result(
    device, full_runs, tmp_path, prepared_file, make_config, monkeypatch
):
    full_out, full_metrics, _ = full_runs(device)
    start_epoch = History.on_train_epoch_start

    def interrupt_epoch_2(self, trainer, module):
        if trainer.current_epoch == 1:
            raise Interrupted  # as a kill at the start of epoch 2 would
        start_epoch(self, trainer, module)

    monkeypatch.setattr(History, "on_train_epoch_start", interrupt_epoch_2)
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        fit(as_trained(make_config, device), prepared_file, out)
    ckpt = torch.load(out / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 5  # saved at the end of epoch 1
    assert device == "cpu" or "cuda_rng_state" in ckpt  # the crops' generator, on a GPU
    monkeypatch.undo()
    metrics = fit(as_trained(make_config, device), prepared_file, out)
    assert without_timings(metrics) == without_timings(full_metrics)
    assert read_history(out) == read_history(full_out)


# ---- DDP: trainer.devices=2 ----


def _ddp_config(make_config: Callable[..., RunConfig], accelerator: str) -> RunConfig:
    return make_config(trainer={"accelerator": accelerator, "devices": 2, "strategy": "ddp"})


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(GPUS < 2, reason="needs 2 GPUs"))],
)
def test_two_device_ddp_configuration_resolves_without_launching(device, make_config, tmp_path):
    t = _ddp_config(make_config, ACCELERATOR[device]).trainer
    check_machine(t)
    trainer = L.Trainer(
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
        logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip
    assert isinstance(trainer.strategy, DDPStrategy)
    assert (trainer.num_devices, trainer.world_size) == (2, 2)
    assert trainer.strategy.root_device.type == device
    assert not torch.distributed.is_initialized()  # resolved: no process started, no group


@pytest.mark.skipif(GPUS != 1, reason="needs exactly one CUDA GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "auto"])
def test_two_devices_on_one_gpu_is_refused_in_one_line(accelerator, make_config):
    """`trainer.devices=2` on a one-GPU machine: a ConfigError naming the field, before anything
    trains (`auto` picks the GPU there, as Lightning does)."""
    with pytest.raises(ConfigError, match=r"^trainer\.devices: 2 exceeds this machine's 1 GPU"):
        check_machine(_ddp_config(make_config, accelerator).trainer)


@NEEDS_CUDA
def test_fit_on_the_gpu_names_it(tmp_path, prepared_file, make_config):
    """`accelerator: auto` (the repo default) trains on the GPU, at bf16-mixed (`auto`)."""
    config = make_config(trainer={"accelerator": "auto", "precision": "auto"})
    metrics = fit(config, prepared_file, tmp_path / "run")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["precision"] == "bf16-mixed" and run["device"].startswith("gpu-")
    assert metrics["device"] == "gpu-" + torch.cuda.get_device_name().replace(" ", "-")
