"""What a person running `dvc repro` reads during training: its progress, one line per epoch.

On a terminal Lightning's tqdm bar shows the epoch's progress and ETA; piped to a file or CI there
is no bar, and the per-epoch line is the only sign of life. Third-party messages that say nothing to
this project's users are filtered here, each by its exact text, so real warnings still show.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from tqdm import tqdm

# Lightning's adverts, its hardware census (the banner names the device) and its stop notice
# (the epoch lines say where training stopped).
_LIGHTNING_NOISE = (
    "💡 Tip:", "GPU available:", "TPU available:", "HPU available:", "`Trainer.fit` stopped",
)  # fmt: skip


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_LIGHTNING_NOISE)


def silence_noise() -> None:
    """Filter the messages that say nothing to a user of this project, at their source loggers."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropNoise())
    # Lightning 2.6 builds torch's deprecated LeafSpec internally; nothing a user can act on.
    leafspec = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
    warnings.filterwarnings("ignore", message=leafspec, category=FutureWarning)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class EpochLines(Callback):
    """One line per finished epoch — `last_row()`, the history row just written — and the time
    left at this pace. Must come after the callback that writes the row."""

    def __init__(self, last_row: Callable[[], dict[str, float]]) -> None:
        self.last_row, self._start, self._first = last_row, 0.0, 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start, self._first = time.perf_counter(), trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        row, epochs = self.last_row(), trainer.max_epochs
        epoch = int(row["epoch"])
        elapsed = time.perf_counter() - self._start
        left = elapsed / max(epoch - self._first, 1) * (epochs - epoch)
        splits = ("train", "train_eval", "val", "test")
        found = ((split, row.get(f"{split}_error", math.nan)) for split in splits)
        errors = "  ".join(f"{s} {e:5.2f}%" for s, e in found if not math.isnan(e))  # evaluated
        tqdm.write(
            f"epoch {epoch}/{epochs}  error: {errors}  lr {row['lr']:.3g}  "
            f"{_duration(elapsed)} elapsed, ~{_duration(left)} left",
            file=sys.stdout,
        )
        sys.stdout.flush()  # piped to a file or CI, stdout is block-buffered: show it now


class ProgressBar(TQDMProgressBar):
    """Lightning's bar, epochs counted from 1, without `v_num` (a W&B run id: says nothing)."""

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, module)
        # Counted from 1, as in the epoch lines and history.csv (Lightning counts from 0).
        self.train_progress_bar.set_description(
            f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        )

    def get_metrics(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, module)
        items.pop("v_num", None)
        return items


def watched() -> bool:
    """A person watches a terminal (else output goes to a file or CI: no live bar there)."""
    return sys.stdout.isatty()


def console_callbacks(last_row: Callable[[], dict[str, float]]) -> list[Callback]:
    """Per-epoch lines (the history's `last_row()`) always; a live bar only when `watched()`."""
    lines = EpochLines(last_row)
    return [lines, ProgressBar()] if watched() else [lines]
