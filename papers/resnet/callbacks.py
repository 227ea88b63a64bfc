"""ResNet's own training rule: the warm-up of ResNet-110 (He et al. 2015, §4.2), a callback a
network's `callbacks` names:

    callbacks: {warm_up: {class_path: papers.resnet.callbacks.WarmUp, lr: 0.01, until_error: 0.8}}
"""

from __future__ import annotations

import statistics
from collections import deque
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class WarmUp(Callback):
    """ResNet-110's warm-up (He et al. 2015, §4.2): train at `lr` (0.01) until the training error
    falls below `until_error` (80%), then at the schedule's LR for good. The error is the mean of
    the last `window` mini-batches, not of one noisy batch; the batch that crosses the threshold
    already steps at the scheduled LR. Its state travels in the checkpoint (a resumed run warms up
    exactly as the uninterrupted one)."""

    def __init__(self, lr: float, until_error: float, window: int = 20) -> None:
        self.lr, self.until_error = lr, until_error
        self.warming_up = True
        self.recent_errors: deque[float] = deque(maxlen=window)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args: Any):
        if self.warming_up:  # the scheduler set its own LR at its last step
            _set_lr(trainer.optimizers[0], [self.lr] * len(trainer.optimizers[0].param_groups))

    def on_before_optimizer_step(
        self, trainer: L.Trainer, module: L.LightningModule, optimizer: Any
    ) -> None:
        if not self.warming_up:
            return
        # The mean over the DDP ranks' batches: every rank switches at the same step.
        error = trainer.strategy.reduce(module.train_batch_error, reduce_op="mean")
        self.recent_errors.append(float(error))
        if statistics.fmean(self.recent_errors) < self.until_error * 100:
            self.warming_up = False
            _set_lr(optimizer, trainer.lr_scheduler_configs[0].scheduler.get_last_lr())

    def state_dict(self) -> dict[str, Any]:
        return {"warming_up": self.warming_up, "recent_errors": list(self.recent_errors)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.warming_up = state["warming_up"]
        self.recent_errors.clear()
        self.recent_errors.extend(state["recent_errors"])


def _set_lr(optimizer: Any, lrs: list[float]) -> None:
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
