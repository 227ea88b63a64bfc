"""benchmarks/gpu_check.sh and its projection: what each paper profile trains, its steps, the
timing's fallback when a batch does not fit, the tables, and the script's bad input."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_projection as gp
from common.config import ConfigError, load_params

REPO = Path(__file__).resolve().parents[1]
HEADER = """\
# A paper. Paper profile:
#   dvc exp run papers/x -S papers/x/params.yaml:profile=paper
#     -S 'papers/x/params.yaml:datasets=[cifar10,cifar100]' -S 'papers/x/params.yaml:seeds=[0,1]'
# Another command, not the paper profile's:
#   dvc exp run papers/x -S 'papers/x/params.yaml:arms=[other]'
"""


def test_the_paper_command_sets_the_lists_it_names_and_leaves_the_files_own(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(HEADER + "profile: default\ndatasets: [mnist]\nseeds: [0]\narms: [a, b]\n")
    assert gp.paper_command(params) == {
        "datasets": ["cifar10", "cifar100"], "arms": ["a", "b"], "seeds": [0, 1],
    }  # fmt: skip
    params.write_text("# no command here\nprofile: default\n")
    with pytest.raises(ConfigError, match=r"^params: .* opens with no `dvc exp run` paper command"):
        gp.paper_command(params)


@pytest.mark.parametrize("paper_dir", gp.paper_dirs(None), ids=lambda d: d.name)
def test_every_paper_opens_with_its_paper_profiles_command(paper_dir):
    matrix = gp.paper_command(paper_dir / "params.yaml")
    paper_datasets = load_params(paper_dir / "params.yaml")["profiles"]["paper"]["datasets"]
    assert matrix["datasets"] and set(matrix["datasets"]) <= set(paper_datasets)
    assert matrix["arms"] and matrix["seeds"]


@pytest.mark.parametrize(
    ("paper", "arm", "dataset", "expected"),
    [
        ("resnet", "resnet20", "cifar10", 64_000),  # max_steps stops it: 64k iterations
        ("stochastic_depth", "constant", "cifar10", 500 * math.ceil(45_000 / 128)),  # 5k held out
        ("dpn", "dpn68", "imagenet", 100 * math.ceil(gp.IMAGENET_TRAIN_IMAGES / 256)),
    ],
)
def test_steps_of_a_paper_profiles_run(paper, arm, dataset, expected):
    config = gp.paper_config(REPO / "papers" / paper, arm, dataset, seed=0)
    assert config.profile == "paper" and gp.steps(config) == expected


def test_a_batch_that_does_not_fit_is_timed_smaller_and_scaled(monkeypatch):
    config = gp.paper_config(REPO / "papers" / "resnet", "resnet20", "cifar10", seed=0)
    tried = []

    def bare_steps(config, device, batch, warmup, timed):
        tried.append(batch)
        if batch > 32:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return 0.001 * batch

    monkeypatch.setattr(gp, "_bare_steps", bare_steps)
    timed = gp.step_time(config, "cpu", warmup=1, timed=1, max_batch=1 << 30)
    assert tried == [128, 64, 32]
    assert (timed.batch, timed.seconds) == (32, pytest.approx(0.001 * 128))


def test_projection_tables_total_each_paper_and_name_what_was_not_measured():
    entries = [
        {"paper": "p", "arm": "a", "dataset": "cifar10", "batch": 128, "steps": 3600,
         "seeds": 2, "step_s": 0.5, "timed_batch": 64},
        {"paper": "p", "arm": "b", "dataset": "cifar10", "batch": 128, "steps": 3600,
         "seeds": 1, "step_s": None, "timed_batch": None},
    ]  # fmt: skip
    text = gp.tables(entries, factor=2.0)
    # a: 3600 steps × 0.5 s × 2 seeds = 1 GPU hour bare, 2 with the overhead.
    assert "| p | 3 | 1.0 (+1 not measured) | 2.0 (+1 not measured) |" in text
    assert "| p | a | cifar10 | 128 | 3,600 | 500.0 (timed at 64, scaled) | 2 | 2.0 |" in text
    assert "| p | b | cifar10 | 128 | 3,600 | not measured | 1 | not measured |" in text


def test_gpu_check_rejects_an_unknown_option_in_one_line():
    result = subprocess.run(
        [REPO / "benchmarks" / "gpu_check.sh", "--bogus"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: unknown option '--bogus' (allowed: --dry-run, --fetch-wheels, --help)"
    )
