"""What `python -m common.train` prints: on a terminal a bar with ETA, piped one line per epoch."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import yaml

from common.results import SUMMARY_METRICS
from common.training import cpu_class
from common.wandb_offline import read_offline_run
from tests.conftest import child_env

NOISE = ("Tip:", "v_num", "anonymous", "limit_train_batches", "LeafSpec", "GPU available")


def _command(tmp_path: Path, params: dict, prepared_file: Path) -> list[str]:
    params["seeds"] = [0, 1, 2]
    params["profiles"]["default"]["wandb"] = {"mode": "offline"}  # in tiny_paper/wandb/
    params_file = tmp_path / "tiny_paper" / "params.yaml"
    params_file.parent.mkdir()
    params_file.write_text(yaml.safe_dump(params))
    args = ["--params", params_file, "--arm", "tiny", "--dataset", "fashion_mnist", "--seed", "1"]
    args += ["--data", prepared_file, "--out", tmp_path / "run"]
    return [sys.executable, "-m", "common.train", *map(str, args)]


def _on_terminal(command: list[str], cwd: Path) -> str:
    """Run `command` with stdout and stderr on a pseudo-terminal; return what it showed."""
    leader, follower = pty.openpty()
    # A real terminal has a size; at 0x0 (a fresh pty's) tqdm draws an empty bar.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = {**child_env(), "WANDB_MODE": "offline"}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=120)
    os.close(leader)
    assert process.returncode == 0
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_piped_output_names_the_run_and_prints_each_epoch_as_it_ends(
    tmp_path: Path, params: dict, prepared_file: Path
) -> None:
    env = {**child_env(), "WANDB_MODE": "offline"}  # W&B on: its warnings must stay quiet too
    del env["PYTHONUNBUFFERED"]  # piped to a file or CI, Python buffers stdout
    process = subprocess.Popen(
        _command(tmp_path, params, prepared_file), cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("epoch 1/2"):
            # Seen while training goes on, not flushed at exit (after metrics.json is written).
            assert not (tmp_path / "run" / "metrics.json").exists()
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 0, stderr[-2000:]
    stdout = "".join(lines)
    banner = (
        r"^tiny_paper: tiny on fashion_mnist, seed 1 \(default profile, 2 epoch\(s\), one of 3 "
    )
    assert re.search(banner, stdout, re.M)  # no [k/N]: DVC's order is not the params' (issue 19)
    epochs = re.findall(r"^epoch (\d)/2  error: train .* val .* test .* lr ", stdout, re.M)
    assert epochs == ["1", "2"]
    output = stdout + stderr
    assert "it/s" not in output  # no progress bar when nobody watches
    assert [noise for noise in NOISE if noise in output] == []
    # W&B's offline run beside the paper's own, where the README's `wandb sync` looks (issue 19).
    [offline] = (tmp_path / "tiny_paper" / "wandb").glob("offline-run-*")
    # Sliceable across papers (issue 26): the same tags, config keys and summary names everywhere.
    run = read_offline_run(offline)
    assert run.group == "tiny_paper" and run.job_type == "default"
    assert run.tags == [
        "paper:tiny_paper", "family:resnet", "profile:default", "dataset:fashion_mnist",
        "arm:tiny", "seed:1", "precision:32-true", f"device:cpu-{cpu_class()}",
    ]  # fmt: skip
    identity = {"paper", "family", "profile", "dataset", "arm", "seed", "precision", "device"}
    assert identity | {"params", "macs"} <= set(run.config), sorted(run.config)
    assert (
        run.config["params"]
        == json.loads((tmp_path / "run" / "metrics.json").read_text())["params"]
    )
    assert set(SUMMARY_METRICS) <= run.summary_keys, sorted(run.summary_keys)
    assert {"train_error", "test_error"} <= run.history_keys, sorted(run.history_keys)


@pytest.mark.slow
def test_terminal_shows_a_progress_bar_with_eta_and_no_run_id(
    tmp_path: Path, params: dict, prepared_file: Path
) -> None:
    shown = _on_terminal(_command(tmp_path, params, prepared_file), tmp_path)
    assert re.search(r"Epoch 1/2: 100%.*\d+/\d+ \[\d\d:\d\d<\d\d:\d\d", shown), shown[-2000:]
    assert "epoch 2/2  error: train" in shown
    assert [noise for noise in NOISE if noise in shown] == []
