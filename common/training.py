"""The classification LightningModule every paper reuses, and `fit`, which runs one configured run.

Lightning owns the loop, checkpoints, DDP and the progress bar; this file adds what the papers
specify: SGD with momentum/Nesterov/weight decay, multi-step schedules by epoch or iteration,
per-epoch train/val/test error, and resumption from the last checkpoint. A paper's own training
rule is a Lightning callback in its folder, which the run's `callbacks` name.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins import TorchCheckpointIO
from torch import Tensor, nn

from common.config import (
    ConfigError,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    build_callbacks,
    build_model,
)
from common.console import console_callbacks, silence_noise, watched
from common.data import ImageDataModule, load_prepared
from common.datasets import DATASETS
from common.imagefolder import ImageFolderDataModule
from common.io import atomic_torch_save, atomic_write_json, atomic_write_text, short_error
from common.metrics import count_macs, count_params
from common.results import family

REPO = Path(__file__).resolve().parents[1]
HISTORY_FIELDS = (
    "epoch", "lr", "train_loss", "train_error", "val_loss", "val_error", "test_loss",
    "test_error", "train_time_s",
)  # fmt: skip
EVAL_TRAIN_FIELDS = ("train_eval_loss", "train_eval_error")
# run.json's keys that tag a W&B run (`paper:wrn`, ...): the same in every paper, to slice by.
WANDB_TAGS = ("paper", "family", "profile", "dataset", "arm", "seed", "precision", "device")


class MultiStep:
    """LR factor gamma^k after the k-th milestone (a picklable LambdaLR function)."""

    def __init__(self, milestones: tuple[int, ...], gamma: float) -> None:
        self.milestones, self.gamma = list(milestones), gamma

    def __call__(self, t: int) -> float:
        return self.gamma ** bisect.bisect_right(self.milestones, t)


class Classifier(L.LightningModule):
    """Cross-entropy classifier; logs loss and error (%) on train, validation and test."""

    def __init__(
        self,
        model: nn.Module,
        optim: OptimConfig,
        schedule: ScheduleConfig,
        channels_last: bool,
        run_digest: str = "",
    ) -> None:
        super().__init__()
        self.run_digest = run_digest  # stored in each checkpoint: which run may resume from it
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(memory_format=self.memory_format)
        self.optim, self.schedule = optim, schedule
        self.model_metric_names: set[str] = set()  # `<split>_<name>` of the model's own metrics
        # The latest training batch's error (%), for callbacks acting before its optimizer step.
        self.train_batch_error: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.contiguous(memory_format=self.memory_format))

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> tuple[Tensor, Tensor]:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        error = (logits.argmax(1) != labels).float().mean() * 100
        log = dict(on_step=False, on_epoch=True, sync_dist=True, batch_size=len(labels))
        self.log(f"{split}_loss", loss, add_dataloader_idx=False, **log)
        self.log(f"{split}_error", error, add_dataloader_idx=False, **log)
        return loss, error

    def on_fit_start(self) -> None:
        report = getattr(self.model, "metrics", None)
        if callable(report):
            report()  # forgets what was counted before training (e.g. counting multiply-adds)

    def _log_model_metrics(self, split: str, on_step: bool) -> None:
        """A model's own quantities since its last report (e.g. an ODE block's function
        evaluations, `model.metrics()`), logged as `<split>_<name>` per epoch (and step)."""
        report = getattr(self.model, "metrics", None)
        log = dict(on_step=on_step, on_epoch=True, sync_dist=True, batch_size=1)  # mean of steps
        for name, value in (report() if callable(report) else {}).items():
            self.model_metric_names.add(f"{split}_{name}")
            self.log(f"{split}_{name}", float(value), add_dataloader_idx=False, **log)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, self.train_batch_error = self._step(batch, "train")
        return loss

    def validation_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ):
        data = self.trainer.datamodule
        split = data.eval_splits[dataloader_idx]
        epochs_left = self.trainer.max_epochs - self.current_epoch
        if split == "train_eval" and epochs_left > data.config.eval_train_epochs:
            # Computed only in the last epochs, where the regime criterion reads it; its loader
            # still runs every epoch, drawing the same seeds: the training batches do not depend
            # on data.eval_train_epochs.
            return
        self._step(batch, split)
        self._log_model_metrics(split, on_step=False)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        # The whole test set, once, with the selected epoch's weights (data.test_curve_size).
        self._step(batch, "selected_test")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._log_model_metrics("train", on_step=True)  # after backward: both passes counted
        # Lightning skips validation when max_steps ends an epoch early, which left the previous
        # epoch's val/test errors in the last history row; a requested stop validates first.
        if 0 <= self.schedule.max_steps <= self.trainer.global_step:
            self.trainer.should_stop = True

    def configure_optimizers(self) -> dict[str, Any]:
        o, s = self.optim, self.schedule
        optimizer = torch.optim.SGD(
            self.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
            weight_decay=o.weight_decay, dampening=0.0,
        )  # fmt: skip
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, MultiStep(s.milestones, s.gamma))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": s.unit},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["run_digest"] = self.run_digest
        # The RNG drives shuffling, crops, flips and dropped blocks: restoring it makes a resumed
        # run continue exactly as the uninterrupted one would have.
        checkpoint["rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["rng_state"])
        if "cuda_rng_state" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng_state"])


class History(Callback):
    """One row per epoch (errors, losses, LR, training wall time) written to `history.csv`.

    Its rows travel in the checkpoint, so a resumed run keeps the curve of the epochs before, and
    a finished run whose `history.csv` DVC removed writes it again from its last checkpoint.
    Training time excludes evaluation: it is what stochastic depth's Table 2 compares.
    """

    def __init__(self, path: Path) -> None:
        self.path, self.rows = Path(path), []
        self._start, self._train_time, self._lr = 0.0, None, float("nan")

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start, self._train_time = time.perf_counter(), None

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if args[-1] == 0:  # the LR the epoch's first step used (warm-up included)
            self._lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._train_time is None:
            self._train_time = time.perf_counter() - self._start

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = {k: metrics.get(k, float("nan")) for k in HISTORY_FIELDS}
        row.update({k: metrics[k] for k in EVAL_TRAIN_FIELDS if k in metrics})  # its last epochs
        for name in sorted(getattr(module, "model_metric_names", ())):  # after the fixed columns
            row[name] = metrics.get(f"{name}_epoch", metrics.get(name, float("nan")))
        train_time = self._train_time or time.perf_counter() - self._start
        row.update(epoch=trainer.current_epoch + 1, train_time_s=train_time)
        row["lr"] = self._lr
        self.rows.append(row)
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        fields = list(self.rows[-1] if self.rows else HISTORY_FIELDS)
        lines = [",".join(fields)]
        lines += [",".join(f"{row.get(k, float('nan')):.6g}" for k in fields) for row in self.rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])


def _on_gpu(accelerator: str) -> bool:
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def cpu_class() -> str:
    """The CPU class the README's budgets name: `avx512-bf16` (native bf16), `avx512`, or `avx2`
    (also where torch is told to use AVX2 kernels, as `budget.py --slow-class` does)."""
    if os.environ.get("ATEN_CPU_CAPABILITY") in ("avx2", "default"):
        return "avx2"
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    if flags & {"avx512_bf16", "amx_bf16"}:
        return "avx512-bf16"
    return "avx512" if "avx512f" in flags else "avx2"


def device_class(accelerator: str) -> str:
    """What trained the run: `cpu-<class>` (cpu_class) or `gpu-<name>`."""
    if _on_gpu(accelerator):
        return "gpu-" + torch.cuda.get_device_name().replace(" ", "-")
    return f"cpu-{cpu_class()}"


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto`: bf16 mixed precision where the hardware runs it natively, else fp32."""
    if precision != "auto":
        return precision
    if _on_gpu(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_class() == "avx512-bf16" else "32-true"


def deterministic_mode(accelerator: str) -> str | None:
    """Deterministic kernels on GPUs; on CPU the kernels used here already are, and the mode's
    NaN-filling of every new tensor costs ~5% of a training step (benchmarks/throughput.py)."""
    on_gpu = accelerator != "cpu" and torch.cuda.is_available()
    return "warn" if on_gpu else None


def run_digest(config: RunConfig, data_hash: str, precision: str) -> str:
    """Hash of everything that determines a run's result: its configuration (thread count
    included), the precision `auto` resolved to on this machine, the content of its data and the
    source of every module of this repo it has loaded (common, the paper's model and what that
    imports). A checkpoint resumes only the run with the same digest: after a change of code,
    data, precision or threads the run starts afresh instead of continuing under other numerics."""
    h = hashlib.sha256(f"{config.digest()}\n{precision}\n{data_hash}\n".encode())
    for path in _repo_sources():
        h.update(f"{path.relative_to(REPO)}\n".encode() + path.read_bytes())
    return h.hexdigest()[:16]


def _repo_sources() -> list[Path]:
    """Source files of the loaded modules that are this repo's own (not .venv's packages)."""
    files = {getattr(m, "__file__", None) or "" for m in list(sys.modules.values())}
    paths = [Path(f) for f in files if os.path.isabs(f) and f.endswith(".py")]
    return sorted(
        p for p in paths
        if p.is_relative_to(REPO) and not any(s.startswith(".") for s in p.relative_to(REPO).parts)
    )  # fmt: skip


def _written_by(path: Path) -> str | None:
    """The run digest stored in checkpoint `path`; None if there is none. One that cannot be
    loaded is set aside as `<name>.unreadable`, never deleted."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("run_digest")
    except Exception as err:  # truncated, corrupt or not a checkpoint: any loader error
        aside = path.with_name(f"{path.name}.unreadable")
        with contextlib.suppress(FileNotFoundError):  # under DDP, another rank moved it first
            path.replace(aside)
        reason = short_error(err)
        print(f"warning: {path} cannot be loaded ({reason}); moved to {aside.name}; starts afresh")
        return None


def _set_aside(last: Path) -> Path:
    """Where another configuration's `last` waits until this run finishes (`fit` then deletes
    it): a setting switched and back resumes from it instead of losing its progress."""
    return last.with_name(f"{last.name}.previous")


def _resume_from(last: Path, digest: str) -> Path | None:
    """`last` if it is a checkpoint of the run with this digest; else None: start afresh.

    Another configuration's `last` is set aside (`_set_aside`), and one set aside with this
    digest is put back and resumed from (the other then set aside in its place). Under DDP,
    Lightning starts the other ranks once rank 0 has moved them (at `trainer.fit`).
    """
    written_by, aside = _written_by(last), _set_aside(last)
    if written_by == digest:
        return last
    if _written_by(aside) == digest:
        other = f"{last.name} (run digest {written_by}) kept as {aside.name} until this run ends"
        kept = f"; {other}" if last.exists() else ""
        print(f"note: {aside} is this configuration's (run digest {digest}): resuming it{kept}")
        _swap(last, aside)
        return last
    if last.exists():
        print(
            f"note: {last} belongs to another configuration (run digest {written_by}, this run "
            f"{digest}); kept as {aside.name} until this run finishes; training afresh"
        )
        last.replace(aside)
    return None


def _swap(last: Path, aside: Path) -> None:
    """Exchange the two files (`last` may be missing: then `aside` only moves)."""
    if not last.exists():
        aside.replace(last)
        return
    between = last.with_name(f"{last.name}.swap")
    aside.replace(between)
    last.replace(aside)
    between.replace(last)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, writing through a temporary file in the checkpoint's own folder.
    Lightning's writes it in the system temp dir (fsspec) and moves it: across filesystems a copy,
    which a kill cut short (a 0-byte last.ckpt, an orphan in /tmp)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_torch_save(checkpoint, Path(path))


silence_noise()
# ckpt/ may hold another configuration's checkpoint, set aside until this run finishes.
warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")


def _last_checkpoint(ckpt_dir: Path) -> ModelCheckpoint:
    # Saved at the end of the training epoch, after History has added that epoch's row.
    # Not save_top_k=0 + save_last=True: Lightning 2.6 then writes last.ckpt only when training
    # ends, so an interrupted run had nothing to resume from. One top-k file named "last" is.
    return ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False,
        save_on_train_epoch_end=True,
    )  # fmt: skip


def _best_checkpoint(ckpt_dir: Path) -> ModelCheckpoint:
    # The weights of the lowest validation error, the earliest on ties as in `select_epoch`
    # (Lightning replaces the best only on a strictly lower value).
    return ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor="val_error", mode="min", save_top_k=1,
        enable_version_counter=False,
    )  # fmt: skip


def _selected_test_error(
    trainer: L.Trainer,
    module: Classifier,
    data: L.LightningDataModule,
    best: ModelCheckpoint | None,
) -> float:
    """Test error of the selected epoch's weights on the whole test set, in one pass.

    The weights only: `trainer.test(ckpt_path=...)` would also restore the callbacks' states from
    that epoch, cutting the history back to the selected epoch."""
    if best is not None:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
    [result] = trainer.test(module, data, verbose=False)
    return result["selected_test_error"]


def _logger(config: RunConfig, run: dict[str, Any]) -> Any:
    """W&B's run, its config the run's configuration plus `run` (what slices runs across papers:
    family, parameters, multiply-adds, precision, device), tagged `<key>:<value>` by WANDB_TAGS."""
    mode = config.wandb.mode
    if mode == "disabled":
        return False
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(
        project=config.wandb.project, group=config.paper,
        name=f"{config.paper}/{config.name}", job_type=config.profile, mode=mode,
        save_dir=config.wandb.dir, config={**config.to_dict(), **run},
        tags=[f"{key}:{run[key]}" for key in WANDB_TAGS],
        settings=wandb.Settings(silent=True),  # its per-run banner and sync hints: see the README
    )  # fmt: skip
    # Lightning 2.6 always passes `anonymous=None`, which wandb >= 0.19 warns is deprecated.
    logger._wandb_init.pop("anonymous", None)
    print(f"W&B: {mode} run in {Path(logger.save_dir or '.').resolve() / 'wandb'}", flush=True)
    return logger


def select_epoch(rows: list[dict[str, float]], select: str) -> dict[str, float]:
    """The epoch whose test error is reported: the last, or the lowest validation error."""
    if select == "last":
        return rows[-1]
    return min(rows, key=lambda r: (r["val_error"], r["epoch"]))


def load_network(run_dir: Path) -> tuple[nn.Module, RunConfig]:
    """The trained network of a run directory, in eval mode, and the run's configuration: rebuilt
    from its `config.json`, with the last checkpoint's weights (loaded with weights_only=True)."""
    run_dir = Path(run_dir)
    files = run_dir / "config.json", run_dir / "ckpt" / "last.ckpt"
    if not all(f.is_file() for f in files):
        raise ConfigError(f"run: {run_dir} lacks config.json or ckpt/last.ckpt (train it first)")
    saved = json.loads(files[0].read_text())
    config = RunConfig.from_dict(saved)
    network = build_model(config.model, saved["input_shape"][0], saved["num_classes"])
    state = torch.load(files[1], map_location="cpu", weights_only=True)["state_dict"]
    network.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    return network.eval(), config


def data_module(config: RunConfig, data_file: Path | None) -> L.LightningDataModule:
    """The run's data: a folder set streamed from `data.root`, else the prepared `data_file`."""
    if DATASETS[config.dataset].folder:  # its listing, from the `data` stage, is optional
        listing = load_prepared(data_file) if data_file is not None else None
        return ImageFolderDataModule.from_config(config.data, config.optim.batch_size, listing)
    if data_file is None:
        raise ConfigError(f"data: {config.dataset} needs its prepared file (--data data/*.pt)")
    return ImageDataModule(data_file, config.data, config.optim.batch_size)


def fit(config: RunConfig, data_file: Path | None, out: Path) -> dict[str, Any]:
    """Train one run, writing `config.json` first, then `history.csv` and checkpoints, and last
    `run.json` (what it is, text) and `metrics.json` (its numbers) under `out`; returns both.
    `data_file` is the prepared set; folder sets (ImageNet) need none."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    torch.set_num_threads(config.trainer.threads)  # not the machine's count: it moves the numbers
    t = config.trainer
    precision = resolve_precision(t.precision, t.accelerator)
    data = data_module(config, data_file)
    data.setup()
    model = build_model(config.model, data.image_shape[0], data.num_classes)
    stats = {"params": count_params(model), "macs": count_macs(model, (1, *data.image_shape))}
    digest = run_digest(config, data.content_hash, precision)
    run = {  # what the run is and how it was obtained (text): run.json
        "paper": config.paper, "profile": config.profile, "arm": config.arm,
        "dataset": config.dataset, "seed": config.seed, "family": family(config.model),
        "precision": precision, "device": device_class(t.accelerator), "threads": t.threads,
        "select": config.select, "config_digest": config.digest(), "run_digest": digest,
    }  # fmt: skip
    out = Path(out)
    shape = {"input_shape": list(data.image_shape), "num_classes": data.num_classes}
    atomic_write_json(out / "config.json", {**config.to_dict(), **shape})  # load_network's input
    module = Classifier(model, config.optim, config.schedule, config.trainer.channels_last, digest)
    resume = _resume_from(out / "ckpt" / "last.ckpt", digest)
    history = History(out / "history.csv")
    logger = _logger(config, run | stats)
    # With a per-epoch test curve on a subset, the reported error needs the selected weights.
    test_once = config.data.test_curve_size is not None
    best = _best_checkpoint(out / "ckpt") if test_once and config.select != "last" else None
    trainer = L.Trainer(
        max_epochs=config.schedule.epochs, max_steps=config.schedule.max_steps,
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
        precision=precision, limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches, num_sanity_val_steps=0,
        deterministic=deterministic_mode(t.accelerator),
        callbacks=[
            history, *build_callbacks(config.callbacks), _last_checkpoint(out / "ckpt"),
            *([best] if best else []),
            *console_callbacks(lambda: history.rows[-1]),
        ],
        enable_progress_bar=watched(), logger=logger, enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=out, log_every_n_steps=1,
    )  # fmt: skip
    device = trainer.strategy.root_device
    print(f"{len(data.train_set)} training images, {precision} on {device}", flush=True)
    trainer.fit(module, data, ckpt_path=resume, weights_only=True)
    test_error = _selected_test_error(trainer, module, data, best) if test_once else None
    if not trainer.is_global_zero:
        return {}
    # A finished run resumed after DVC removed its outputs trains nothing: its rows come from the
    # checkpoint, and history.csv is written from them (as after every epoch).
    history.write()
    chosen = select_epoch(history.rows, config.select)
    metrics = {  # its numbers (RUN_METRICS): metrics.json, DVC's metrics
        "epochs": len(history.rows), "steps": trainer.global_step,
        "train_images": len(data.train_set), **stats,
        "selected_epoch": int(chosen["epoch"]),
        "test_error": chosen["test_error"] if test_error is None else test_error,
        "test_images": len(data.test_set), "test_curve_images": len(data.test_curve_set),
        "val_error": None if math.isnan(chosen["val_error"]) else chosen["val_error"],
        "final_train_error": history.rows[-1]["train_error"],
        "final_test_error": history.rows[-1]["test_error"],
        "train_time_s": sum(r["train_time_s"] for r in history.rows),
    }  # fmt: skip
    metrics["time_per_epoch_s"] = metrics["train_time_s"] / metrics["epochs"]
    if logger:
        logger.experiment.summary.update(metrics)
    atomic_write_json(out / "run.json", run)
    atomic_write_json(out / "metrics.json", metrics)  # last: the run is finished
    _set_aside(out / "ckpt" / "last.ckpt").unlink(missing_ok=True)  # finished: nothing to resume
    return run | metrics
