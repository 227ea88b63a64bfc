"""Stochastic depth's own training rule, a callback its profiles name (`callbacks:
decay_dropped_blocks: {class_path: papers.stochastic_depth.callbacks.DecayDroppedBlocks}`)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class DecayDroppedBlocks(Callback):
    """A block dropped in this step still gets weight decay and momentum, as in the official Torch
    code (Huang et al. 2016): its parameters got no gradient, and torch's SGD skips a parameter
    whose gradient is None, so each gets a zero gradient before the step, from the first step on
    (zeroing gradients in place, `zero_grad(set_to_none=False)`, still skipped a block dropped
    before it had ever run)."""

    def on_before_optimizer_step(
        self, trainer: L.Trainer, module: L.LightningModule, optimizer: Any
    ) -> None:
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                if parameter.requires_grad and parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
