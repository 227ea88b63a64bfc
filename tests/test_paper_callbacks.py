"""The papers' own training rules, plugged in by `callbacks` (class_path) as models are:
ResNet-110's warm-up (papers/resnet/callbacks.py) and stochastic depth's decay of dropped blocks
(papers/stochastic_depth/callbacks.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from common.config import ConfigError, OptimConfig, ScheduleConfig, build_callbacks
from common.training import Classifier, fit
from papers.resnet.callbacks import WarmUp
from papers.stochastic_depth.callbacks import DecayDroppedBlocks
from tests.test_training import (
    Interrupted,
    _interrupt_at_epoch_2,
    assert_close_rows,
    read_history,
    without,
)

WARM_UP = "papers.resnet.callbacks.WarmUp"


class Logits(nn.Module):
    """Returns its input as the logits, so a test chooses each batch's error."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.w


def _batch(error_pct: int) -> tuple[torch.Tensor, torch.Tensor]:
    """10 samples predicted as class 0, `error_pct`% of them labelled otherwise."""
    logits = torch.zeros(10, 10)
    logits[:, 0] = 1
    labels = torch.zeros(10, dtype=torch.long)
    labels[: error_pct // 10] = 1
    return logits, labels


def warm_up(lr: float = 0.01, until_error: float = 0.8) -> dict:
    return {"warm_up": {"class_path": WARM_UP, "lr": lr, "until_error": until_error}}


def test_warmup_switches_once_error_drops_below_threshold(monkeypatch):
    module = Classifier(Logits(), OptimConfig(lr=0.1), ScheduleConfig(), channels_last=False)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    trainer = SimpleNamespace(
        optimizers=[optimizer], lr_scheduler_configs=[SimpleNamespace(scheduler=scheduler)],
        strategy=SimpleNamespace(reduce=lambda value, reduce_op: value),
    )  # fmt: skip
    [callback] = build_callbacks(warm_up())
    lrs = []
    for i, error in enumerate([100, 60, 70, 50, 100, 100]):
        callback.on_train_batch_start(trainer, module, None, i)
        module.training_step(_batch(error), i)
        callback.on_before_optimizer_step(trainer, module, optimizer)
        lrs.append(optimizer.param_groups[0]["lr"])  # the LR optimizer.step() uses
    # The mean of the recent batches: 100, 80 (not below 80%), then 76.7: from that batch on the
    # scheduled LR, for good, even when later batches err more.
    assert lrs == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.1, 0.1])
    state = callback.state_dict()
    assert not state["warming_up"] and state["recent_errors"] == pytest.approx([100, 60, 70])


def test_callbacks_are_built_in_their_order_and_checked_like_models(make_config):
    assert make_config().callbacks == {}  # no paper rule unless the params name one
    two = {
        **warm_up(),
        "decay": {"class_path": "papers.stochastic_depth.callbacks.DecayDroppedBlocks"},
    }
    assert [type(c) for c in build_callbacks(two)] == [WarmUp, DecayDroppedBlocks]
    errors = {
        "callbacks.warm_up.lr: 'x' is not of type float": warm_up(lr="x"),
        "callbacks.warm_up.class_path: cannot import 'papers.resnet.callbacks.Nope'": {
            "warm_up": {"class_path": "papers.resnet.callbacks.Nope"}
        },
        "callbacks.warm_up.class_path: missing": {"warm_up": {"lr": 0.01}},
        "callbacks.warm_up: WarmUp.__init__() got an unexpected keyword argument 'rate'": {
            "warm_up": {"class_path": WARM_UP, "lr": 0.01, "until_error": 0.8, "rate": 1}
        },
    }
    for message, callbacks in errors.items():
        with pytest.raises(ConfigError) as err:
            make_config(callbacks=callbacks)  # at resolve time, before anything trains
        assert str(err.value).startswith(message), str(err.value)


def test_run_interrupted_during_warmup_resumes_it_exactly(
    tmp_path, monkeypatch, prepared_file, make_config
):
    """Warm-up ends in epoch 2, on the mean error of batches from both epochs: a run resumed at
    epoch 2 must have restored epoch 1's batch errors to end it at the same step."""
    never = fit(make_config(callbacks=warm_up(until_error=0.0)), prepared_file, tmp_path / "never")
    e1, e2 = (r["train_error"] for r in read_history(tmp_path / "never"))
    assert e2 < e1  # training at 0.01 lowers the error
    until = (e1 + (e1 + e2) / 2) / 2 / 100  # below epoch 1's mean, above the mean of both
    config = make_config(callbacks=warm_up(until_error=until))
    full = fit(config, prepared_file, tmp_path / "full")
    _interrupt_at_epoch_2(monkeypatch)
    with pytest.raises(Interrupted):
        fit(config, prepared_file, tmp_path / "run")
    monkeypatch.undo()
    resumed = fit(config, prepared_file, tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["callbacks"]["WarmUp"]["warming_up"] is False  # it ended, in epoch 2
    assert read_history(tmp_path / "full")[0]["lr"] == pytest.approx(0.01)
    assert full["test_error"] != never["test_error"]  # its end changed the trained network
    assert without(resumed) == without(full)
    assert_close_rows(read_history(tmp_path / "run"), read_history(tmp_path / "full"))


@pytest.mark.parametrize(
    ("until_error", "lrs", "warming_up"),
    [(1.0, [0.05, 0.005], False), (0.0, [0.01, 0.01], True)],
)
def test_warmup_in_fit(tmp_path, prepared_file, make_config, until_error, lrs, warming_up):
    """100%: the first batch ends warm-up, then the schedule; 0%: warm-up never ends."""
    fit(make_config(callbacks=warm_up(until_error=until_error)), prepared_file, tmp_path)
    assert [r["lr"] for r in read_history(tmp_path)] == pytest.approx(lrs)
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["callbacks"]["WarmUp"]["warming_up"] is warming_up


def test_dropped_blocks_get_weight_decay_and_momentum_from_the_first_step():
    """A parameter without a gradient (its block dropped, even in the very first step, before it
    ever had one) moves by SGD's weight decay, as the official Torch code's zeroed
    gradParameters do; torch's SGD alone would skip it."""
    used, dropped = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([used, dropped], lr=0.1, momentum=0.9, weight_decay=0.5)
    for _ in range(2):
        optimizer.zero_grad()  # Lightning's: set_to_none=True
        (used * 2).sum().backward()
        assert dropped.grad is None
        DecayDroppedBlocks().on_before_optimizer_step(None, None, optimizer)
        optimizer.step()
    # Step 1: d = 0 + 0.5 * 1 = 0.5, p = 1 - 0.05 = 0.95; step 2: d = 0.5 * 0.95 + 0.9 * 0.5.
    expected = 0.95 - 0.1 * (0.5 * 0.95 + 0.9 * 0.5)
    assert dropped.detach() == pytest.approx(torch.full((3,), expected))
    assert torch.equal(used.grad, torch.full((3,), 2.0))  # a used parameter's own gradient
