"""A paper is one folder: each has what the pipeline, the tests and the notebooks find it by."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest
import yaml
from ruamel.yaml import YAML

from common.regime import check_regime

REPO = Path(__file__).resolve().parents[1]
MAX_FILE_BYTES = 1_000_000  # notebooks with figures stay under 300 kB; locks are text
PAPERS = sorted(p.name for p in (REPO / "papers").iterdir() if (p / "__init__.py").is_file())


def test_papers_are_found() -> None:
    assert {"resnet", "stochastic_depth"} <= set(PAPERS)


@pytest.mark.parametrize("paper", PAPERS)
def test_paper_folder_is_complete(paper: str) -> None:
    folder = REPO / "papers" / paper
    for name in ("dvc.yaml", "params.yaml", "published.yaml", "README.md"):
        assert (folder / name).is_file(), f"papers/{paper}/{name} is missing"
    assert (REPO / "notebooks" / f"{paper}.ipynb").is_file(), f"notebooks/{paper}.ipynb missing"
    params = yaml.safe_load((folder / "params.yaml").read_text())
    for name in ("params.yaml", "dvc.yaml", "published.yaml"):
        YAML().load((folder / name).read_text())  # as strict as DVC: a duplicate key fails here
    assert {"default", "smoke", "paper"} <= set(params["profiles"]), f"papers/{paper} profiles"
    check_regime(params)  # where the claim applies, stated before the runs (common/regime.py)
    assert params.get("regime"), f"papers/{paper}/params.yaml states no regime"
    root = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    stage = root.get(f"papers/{paper}")
    assert stage, f"dvc.yaml has no stage papers/{paper} (so `dvc repro papers/{paper}` fails)"
    assert f"papers/{paper}/results/table.md" in stage["deps"]
    stages = yaml.safe_load((folder / "dvc.yaml").read_text())["stages"]
    checked = f"papers/{paper}/results/checked.txt"  # the check stage first (issue 18)
    assert stages["check"]["cmd"] == f"python -m common.check papers/{paper}"
    assert [next(iter(out)) for out in stages["check"]["outs"]] == [checked]
    assert checked in stages["train"]["deps"]
    assert "OMP_NUM_THREADS" not in stages["train"]["cmd"]  # trainer.threads says it (issue 19)
    assert f"dvc repro papers/{paper}" in (folder / "README.md").read_text()
    assert f"(papers/{paper}/README.md)" in (REPO / "README.md").read_text()  # linked


def _repo_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
    return {m for m in modules if m.split(".")[0] in ("common", "papers")}


def test_layering_papers_use_common_never_the_reverse() -> None:
    for path in (REPO / "common").glob("*.py"):
        assert not [m for m in _repo_imports(path) if m.startswith("papers")], path.name
    for path in (REPO / "papers" / "resnet").glob("*.py"):  # the root paper extends none
        others = {m.split(".")[1] for m in _repo_imports(path) if m.startswith("papers.")}
        assert others <= {"resnet"}, path


def test_git_holds_no_data_or_checkpoints() -> None:
    """Data sets and checkpoints are DVC outputs: no tracked file is large or a tensor file."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()

    def too_big(name: str) -> bool:
        return (REPO / name).is_file() and (REPO / name).stat().st_size > MAX_FILE_BYTES

    offenders = [n for n in tracked if n.endswith((".pt", ".ckpt", ".gz")) or too_big(n)]
    assert not offenders, offenders


def test_readme_says_how_to_undo_a_failed_exp_run() -> None:
    """A failed `dvc exp run -S` leaves its value in the params file (issue 18, item 9)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("dvc exp run papers/stochastic_depth -S") :]
    section = section[: section.index("## ")]
    assert "git checkout -- papers/<paper>/params.yaml params.yaml" in section
    assert "git update-index --really-refresh" in section
