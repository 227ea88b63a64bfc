"""Smoke `dvc repro` of each paper, typed as the README prints it, in a clean shell (nothing
activated, only the system's PATH), in a temporary copy of the repo on tiny data. Each paper's
tests are one unit of work for the test processes (tests/conftest.py): a process runs a paper's
pipeline, in its own copy of the repo, when the first of them asks for it."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from common.table import VERDICTS
from tests.test_notebooks import execute_notebook, output_text

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"  # a login shell's PATH before any activation
# The README's main command: the first line of its first shell block that runs `dvc repro`.
README_COMMAND = re.search(
    r"^(\./setup\.sh .*dvc repro papers/stochastic_depth)", (REPO / "README.md").read_text(), re.M
).group(1)
VENV = Path(sys.prefix)  # the .venv that setup.sh made and pytest runs in
PAPERS = sorted(p.parent.name for p in (REPO / "papers").glob("*/dvc.yaml"))
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


def _smoke(params: dict) -> None:
    """The paper's own smoke profile, one seed: every arm and data set, each in seconds."""
    params["profile"] = "smoke"
    params["seeds"] = params["seeds"][:1]


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the working tree's tracked files, every paper on its smoke profile (one a test
    process)."""
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
    for paper in PAPERS:
        _edit_yaml(root / "papers" / paper / "params.yaml", _smoke)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    # The copy's setup.sh must find this .venv up to date (same pins) and install nothing: were
    # it stale, it would reinstall the project editable from the copy, pointing the shared .venv
    # at a temporary folder. So bring it up to date here, from the working tree, first.
    if VENV.resolve() == (REPO / ".venv").resolve():
        with (tmp_path_factory.getbasetemp().parent / "setup.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the test processes share the .venv
            subprocess.run(["./setup.sh"], cwd=REPO, check=True, capture_output=True)
    (root / ".venv").symlink_to(VENV, target_is_directory=True)
    return root


def readme_command(paper: str) -> str:
    """The README's main command, verbatim, for `paper`."""
    return README_COMMAND.replace("papers/stochastic_depth", f"papers/{paper}")


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


class Repros(dict[str, subprocess.CompletedProcess]):
    """Each paper's pipeline, run by the README's command verbatim (with the paper's name) the
    first time a test asks for the paper."""

    def __init__(self, repo: Path) -> None:
        super().__init__()
        self.repo = repo

    def __missing__(self, paper: str) -> subprocess.CompletedProcess:
        self[paper] = clean_shell(self.repo, readme_command(paper))
        return self[paper]


@pytest.fixture(scope="session")
def repros(repo: Path) -> Repros:
    return Repros(repo)


@pytest.mark.parametrize("paper", PAPERS)
def test_repro_writes_key_table_then_runs_nothing(repo: Path, repros: Repros, paper: str) -> None:
    first = repros[paper]
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    table = json.loads((repo / f"papers/{paper}/results/table.json").read_text())
    verdicts = {row["verdict"] for row in table["rows"]}
    assert verdicts <= set(VERDICTS)
    ran = [r for r in table["rows"] if r["ours"] and r["how"] != "counted on the network"]
    assert ran and all("fashion_mnist" in r["how"] for r in ran)
    assert first.stdout.count("| Verdict |") == 1  # the root stage prints the key table, once
    _assert_console_says_which_run_and_no_noise(first, paper)
    again = clean_shell(repo, f"source .venv/bin/activate && {readme_command(paper)}")
    _assert_nothing_ran(again, paper)
    assert again.stdout.count("| Verdict |") == 1  # the key table again, nothing trained


def _assert_nothing_ran(result: subprocess.CompletedProcess, paper: str) -> None:
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Running stage 'papers/{paper}/dvc.yaml:" not in result.stdout, result.stdout


def _assert_console_says_which_run_and_no_noise(
    result: subprocess.CompletedProcess, paper: str
) -> None:
    """Piped (as in CI): a banner per run, a line per epoch, no progress bar, no library noise."""
    banners = re.findall(rf"^{paper}: (.*) \(.*, one of (\d+) runs\) -> ", result.stdout, re.M)
    assert banners and {n for _, n in banners} == {str(len(banners))}, result.stdout[-3000:]
    assert len({run for run, _ in banners}) == len(banners)  # each run of the matrix once
    assert len(re.findall(r"^epoch 1/\d+  error: train ", result.stdout, re.M)) == len(banners)
    output = result.stdout + result.stderr
    for noise in ("Tip:", "v_num", "anonymous", "limit_train_batches", "LeafSpec", "it/s"):
        assert noise not in output, noise


@pytest.mark.parametrize("paper", PAPERS)
def test_runs_have_expected_files(repo: Path, repros: Repros, paper: str) -> None:
    assert repros[paper].returncode == 0
    params = yaml.safe_load((repo / "papers" / paper / "params.yaml").read_text())
    matrix = itertools.product(params["arms"], params["datasets"], params["seeds"])
    runs = sorted(p.name for p in (repo / "papers" / paper / "runs").iterdir())
    assert runs == sorted(f"{a}-{d}-s{s}" for a, d, s in matrix)
    epochs = params["profiles"]["smoke"]["schedule"]["epochs"]
    for run in runs:
        run_dir = repo / "papers" / paper / "runs" / run
        assert (run_dir / "ckpt/last.ckpt").is_file()
        assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + epochs


# The README's DVC commands after the main command, for stochastic_depth (any paper: its name).
README_DVC = re.findall(
    r"^(dvc (?:metrics|plots|exp) show .*?)(?:  +#.*)?$", (REPO / "README.md").read_text(), re.M
)


def readme_dvc(command: str, paper: str) -> str:
    """The README's first DVC command that starts with `command`, for `paper`."""
    line = next(c for c in README_DVC if c.startswith(command))
    return line.replace("papers/stochastic_depth", f"papers/{paper}")


@pytest.mark.parametrize("paper", PAPERS)
def test_metrics_show_as_the_readme_prints_it(repo: Path, repros: Repros, paper: str) -> None:
    """Numbers only, a line per run; the papers' verdict counts (issue 19)."""
    assert repros[paper].returncode == 0
    lines = [c for c in README_DVC if c.startswith("dvc metrics show")]
    assert len(lines) == 2, README_DVC
    runs, papers = (
        clean_shell(repo, f"source .venv/bin/activate && {readme_dvc(line, paper)}")
        for line in lines
    )
    assert runs.returncode == 0 and "failed to load" not in runs.stdout + runs.stderr, runs.stderr
    header, *rows = runs.stdout.strip().splitlines()
    assert "test_error" in header.split() and "arm" not in header.split()  # no text columns
    assert len(rows) == len(list((repo / "papers" / paper / "runs").glob("*/metrics.json")))
    assert papers.returncode == 0 and f"papers/{paper}/results/metrics.json" in papers.stdout
    assert "direction_reproduced" in papers.stdout.splitlines()[0]


@pytest.mark.parametrize("paper", ["stochastic_depth"])  # in that paper's unit of work
def test_plots_and_exp_show_as_the_readme_prints_them(
    repo: Path, repros: Repros, paper: str
) -> None:
    assert repros[paper].returncode == 0
    plots = dvc(repo, *readme_dvc("dvc plots show", paper).split()[1:])
    assert plots.returncode == 0 and (repo / "dvc_plots" / "index.html").is_file(), plots.stderr
    git = "git -c user.name=t -c user.email=t@t"  # `dvc exp show` needs a commit
    clean_shell(repo, f"git rev-parse -q HEAD || ({git} add -A && {git} commit -qm runs)")
    exp = clean_shell(repo, f"source .venv/bin/activate && {readme_dvc('dvc exp show', paper)}")
    assert exp.returncode == 0, exp.stderr[-2000:]
    assert f"papers/{paper}/runs/" in exp.stdout and "metrics.json:test_error" in exp.stdout
    assert "workspace" in exp.stdout


def test_unknown_paper_is_a_clear_error(repo: Path) -> None:
    result = dvc(repo, "repro", "papers/no_such_paper")
    assert result.returncode != 0
    assert "papers/no_such_paper" in result.stderr


@pytest.mark.parametrize("paper", PAPERS)
def test_notebook_redraws_the_runs(repo: Path, repros: Repros, paper: str, tmp_path: Path) -> None:
    assert repros[paper].returncode == 0
    outputs = execute_notebook(REPO / "notebooks" / f"{paper}.ipynb", repo / "papers" / paper,
                               tmp_path / "out.ipynb")  # fmt: skip
    assert [o for o in outputs if "image/png" in o.get("data", {})]
    title = json.loads((repo / f"papers/{paper}/results/table.json").read_text())["title"]
    assert title in output_text(outputs) and "No results yet" not in output_text(outputs)
