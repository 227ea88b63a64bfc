"""Smoke `dvc repro` of each paper, typed as the README prints it, in a clean shell (nothing
activated, only the system's PATH), in a temporary copy of the repo on tiny data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"  # a login shell's PATH before any activation
# The README's main command: the first line of its first shell block that runs `dvc repro`.
README_COMMAND = re.search(
    r"^(\./setup\.sh .*dvc repro papers/stochastic_depth)", (REPO / "README.md").read_text(), re.M
).group(1)
VENV = Path(sys.prefix)  # the .venv that setup.sh made and pytest runs in
TINY = {
    "data": {"val_size": 64, "train_size": 128, "test_size": 64},
    "optim": {"batch_size": 64},
    "schedule": {"epochs": 1, "milestones": []},
}
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist"),
    pytest.mark.skipif(
        not (VENV / ".installed").is_file(), reason="runs the README in the .venv setup.sh makes"
    ),
]


def _edit_yaml(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _tiny_profile(params: dict, depth: int, arms: list[str] | None, seeds: list[int]) -> None:
    profile = params["profiles"]["default"]
    for section, values in TINY.items():
        profile[section] = {**profile.get(section, {}), **values}
    profile["model"]["depth"] = depth
    params["seeds"] = seeds
    params["arms"] = arms or params["arms"]
    for network in params["networks"].values():  # every arm at the tiny depth
        network.get("model", {}).pop("depth", None)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git checkout of the working tree's tracked files, with tiny default profiles."""
    root = tmp_path_factory.mktemp("repo")
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in tracked:
        skip = name.startswith(("tests/", "notebooks/")) or "/runs/" in name or "/data/" in name
        if not skip and (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    _edit_yaml(root / "params.yaml", lambda p: p["wandb"].update(mode="disabled"))
    sd, rn = root / "papers/stochastic_depth/params.yaml", root / "papers/resnet/params.yaml"
    _edit_yaml(sd, lambda p: _tiny_profile(p, 8, None, [0, 1]))
    _edit_yaml(
        rn, lambda p: _tiny_profile(p, 8, ["plain20", "plain56", "resnet20", "resnet56"], [0])
    )
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    # setup.sh finds this .venv up to date (same pins) and installs nothing.
    (root / ".venv").symlink_to(VENV, target_is_directory=True)
    return root


def clean_shell(repo: Path, command: str) -> subprocess.CompletedProcess:
    """`command` in bash with a new user's environment: HOME and the system PATH, nothing else."""
    env = ["env", "-i", f"HOME={os.environ['HOME']}", f"PATH={CLEAN_PATH}"]
    return subprocess.run(
        [*env, "bash", "-c", command], cwd=repo, capture_output=True, text=True, timeout=900
    )


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return clean_shell(repo, f"source .venv/bin/activate && dvc {' '.join(args)}")


def test_readme_command_is_the_main_job() -> None:
    assert README_COMMAND.startswith("./setup.sh && ")
    assert README_COMMAND.endswith("dvc repro papers/stochastic_depth")


@pytest.mark.parametrize("paper", ["stochastic_depth", "resnet"])
def test_repro_writes_key_table_then_runs_nothing(repo: Path, paper: str) -> None:
    # The README's command verbatim (the same with the paper's name for every paper).
    command = README_COMMAND.replace("papers/stochastic_depth", f"papers/{paper}")
    first = clean_shell(repo, command)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    table = json.loads((repo / f"papers/{paper}/results/table.json").read_text())
    verdicts = {row["verdict"] for row in table["rows"]}
    assert verdicts <= {"reproduced", "direction reproduced", "not reproduced",
                        "not run in this profile"}  # fmt: skip
    ran = [r for r in table["rows"] if r["ours"] and r["how"] != "counted on the network"]
    assert ran and all("fashion_mnist" in r["how"] for r in ran)
    assert "| Verdict |" in first.stdout  # the root stage prints the key table
    _assert_console_says_which_run_and_no_noise(first, paper)
    for again in (["repro", f"papers/{paper}"], ["repro", "-R", f"papers/{paper}"],
                  ["repro", f"papers/{paper}/dvc.yaml"]):  # fmt: skip
        result = dvc(repo, *again)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "Running stage" not in result.stdout, result.stdout[-2000:]


def _assert_console_says_which_run_and_no_noise(
    result: subprocess.CompletedProcess, paper: str
) -> None:
    """Piped (as in CI): a banner per run, a line per epoch, no progress bar, no library noise."""
    banners = re.findall(rf"^\[(\d+)/(\d+)\] {paper}: ", result.stdout, re.M)
    assert banners and {n for _, n in banners} == {str(len(banners))}, result.stdout[-3000:]
    assert sorted(int(k) for k, _ in banners) == list(range(1, len(banners) + 1))
    assert len(re.findall(r"^epoch 1/1  error: train ", result.stdout, re.M)) == len(banners)
    output = result.stdout + result.stderr
    for noise in ("Tip:", "v_num", "anonymous", "limit_train_batches", "LeafSpec", "it/s"):
        assert noise not in output, noise


def test_stochastic_depth_runs_have_expected_files(repo: Path) -> None:
    runs = sorted(p.name for p in (repo / "papers/stochastic_depth/runs").iterdir())
    assert runs == [f"{a}-fashion_mnist-s{s}" for a in ("constant", "stochastic") for s in (0, 1)]
    for run in runs:
        run_dir = repo / "papers/stochastic_depth/runs" / run
        assert (run_dir / "ckpt/last.ckpt").is_file()
        assert len((run_dir / "history.csv").read_text().splitlines()) == 2  # header + 1 epoch
    metrics = dvc(repo, "metrics", "show", "--json")
    assert metrics.returncode == 0 and "test_error" in metrics.stdout


def test_unknown_paper_is_a_clear_error(repo: Path) -> None:
    result = dvc(repo, "repro", "papers/no_such_paper")
    assert result.returncode != 0
    assert "papers/no_such_paper" in result.stderr
