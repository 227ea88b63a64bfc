"""papers/dpn/topk.py: top-1 and top-5 error from a trained run's checkpoint (Table 2's columns)."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from common.config import ConfigError
from papers.dpn.topk import topk_correct, topk_errors
from tests.conftest import REPO


def test_topk_correct_counts_labels_among_the_k_highest_logits() -> None:
    logits = torch.tensor(
        [
            [0.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0],  # label 1: top-1
            [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 0.0],  # label 4: 5th highest, top-5 only
            [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 0.0],  # label 5: 6th highest, neither
        ]
    )
    assert topk_correct(logits, torch.tensor([1, 4, 5])) == {1: 1, 5: 2}


def test_topk_caps_k_at_the_number_of_classes() -> None:
    """With 3 classes every label is among the "5" highest: top-5 error 0, not an index error."""
    counts = topk_correct(torch.tensor([[3.0, 2.0, 1.0]] * 3), torch.tensor([0, 1, 2]))
    assert counts == {1: 1, 5: 3}


def test_topk_errors_over_batches_in_percent() -> None:
    model = nn.Identity()  # the "images" are the logits themselves
    logits = torch.arange(7.0, 0.0, -1.0).repeat(4, 1)  # class 0 highest, class 6 lowest
    batches = [(logits[:2], torch.tensor([0, 6])), (logits[2:], torch.tensor([0, 4]))]
    errors = topk_errors(model, batches)  # top-1: 2 of 4 right; top-5: 3 of 4 (not class 6)
    assert errors == {"top1_error": 50.0, "top5_error": 25.0, "topk_images": 4}


def test_an_empty_test_split_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match=r"^data: the test split is empty$"):
        topk_errors(nn.Identity(), [])


def test_the_key_table_waits_for_the_topk_stage() -> None:
    """`dvc repro papers/dpn` runs the table's ancestors only: without this dep the top-5 rows
    would read "not run" although the profile ran."""
    stages = yaml.safe_load((REPO / "papers" / "dpn" / "dvc.yaml").read_text())["stages"]
    (topk_out,) = (next(iter(o)) if isinstance(o, dict) else o for o in stages["topk"]["outs"])
    assert topk_out in stages["table"]["deps"]
