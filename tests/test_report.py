"""The cross-paper W&B report (issue 26): `python -m common.report` without an account."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from common import report
from common.summary import MEASURES
from common.wandb_offline import read_offline_run
from tests.conftest import REPO, TINY_PARAMS, child_env

# wandb-workspaces 0.4.13 still uses pydantic v1-style validators.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:wandb_workspaces.*")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, prepared_file: Path) -> Path:
    """A repo with two papers: tiny_paper with one finished run logged offline to W&B, and
    idle_paper with none."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copy(REPO / "params.yaml", root)
    params = json.loads(json.dumps(TINY_PARAMS))
    params["profiles"]["default"]["wandb"] = {"mode": "offline"}
    for paper in ("tiny_paper", "idle_paper"):
        (root / "papers" / paper).mkdir(parents=True)
        (root / "papers" / paper / "params.yaml").write_text(yaml.safe_dump(params))
    paper_dir = root / "papers" / "tiny_paper"
    args = ["--params", paper_dir / "params.yaml", "--arm", "tiny", "--dataset", "fashion_mnist",
            "--seed", "0", "--data", prepared_file, "--out", paper_dir / "runs" / "t"]  # fmt: skip
    env = {**child_env(), "WANDB_MODE": "offline"}
    command = [sys.executable, "-m", "common.train", *map(str, args)]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return root


def _offline_report(root: Path, home: Path) -> subprocess.CompletedProcess:
    """`python -m common.report` as someone without a W&B account (an empty HOME: no netrc)."""
    env = {**child_env(), "HOME": str(home)}
    env.pop("WANDB_API_KEY", None)
    command = [sys.executable, "-m", "common.report", "--root", str(root)]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_without_an_account_it_says_so_in_one_line_and_writes_the_definition(
    root: Path, tmp_path: Path
) -> None:
    done = _offline_report(root, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("\n") == 1 and "not saved to W&B" in done.stdout, done.stdout
    assert done.stderr == ""
    spec = json.loads((root / report.OUT).read_text())
    # A section for each paper with runs; the one without is named, not given a section.
    assert report.sections(spec) == ["tiny_paper"]
    texts = json.dumps(spec["spec"]["blocks"])
    assert "No runs yet: idle_paper." in texts


def test_the_panels_name_metrics_the_runs_have(root: Path) -> None:
    spec = report.definition(report.build(root, "resnet-family", ""))
    grids = [b for b in spec["spec"]["blocks"] if b["type"] == "panel-grid"]
    across = grids[0]["metadata"]["panelBankSectionConfig"]["panels"]
    assert len(across) == len(MEASURES)  # one panel per summary figure
    [offline] = report.offline_runs(root / "papers" / "tiny_paper")
    run = read_offline_run(offline)
    logged = run.summary_keys | run.history_keys | set(run.config)
    assert report.panel_metrics(spec) - logged == set()
    assert {"params", "macs", "train_time_s", "train_error", "test_loss"} <= report.panel_metrics(
        spec
    )
