"""Every DVC stage lists, as deps, exactly the repo modules its command runs (`common.pipeline`
generates them: the `python -m` module, what it imports, transitively, lazy imports included,
and the modules the paper's `class_path`s load), and the committed locks match the code beside
them. A missing dep leaves stale results that DVC reports as up to date."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import pipeline

REPO = Path(__file__).resolve().parents[1]


def test_every_stage_lists_exactly_the_code_it_runs() -> None:
    """`python -m common.pipeline --check` on this repo: the root dvc.yaml and every paper's."""
    result = subprocess.run(
        [sys.executable, "-m", "common.pipeline", "--check"], cwd=REPO, capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def _code_copy(root: Path) -> Path:
    """The code and the DVC files (no runs, results or W&B logs)."""
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "data").mkdir()
    shutil.copy2(REPO / "data" / "dvc.yaml", root / "data" / "dvc.yaml")
    for name in ("common", "papers"):
        skip = shutil.ignore_patterns("runs", "results", "wandb", "__pycache__")
        shutil.copytree(REPO / name, root / name, ignore=skip)
    return root


def test_a_stale_dep_list_is_reported_with_its_fix_and_fixed(tmp_path: Path) -> None:
    root = _code_copy(tmp_path)
    dvc_file = root / "papers/resnet/dvc.yaml"
    generated = pipeline.rewrite(root, dvc_file)  # as the repo's, whatever the code now runs
    assert "      - common/metrics.py\n" in generated
    stale = generated.replace("      - common/metrics.py\n", "", 1).replace(
        "      - common/check.py\n", "      - common/check.py\n      - common/stats.py\n", 1
    )
    dvc_file.write_text(stale)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "common.pipeline", *args], cwd=root,
                              capture_output=True, text=True)  # fmt: skip

    check = run("--check")
    assert check.returncode == 1
    fix = "(fix: python -m common.pipeline papers/resnet)"
    assert f"papers/resnet/dvc.yaml: stage train lacks common/metrics.py {fix}" in check.stdout
    assert f"stage check lists common/stats.py, which it does not run {fix}" in check.stdout
    assert run("papers/resnet").returncode == 0
    assert dvc_file.read_text() == generated  # comments, other deps and layout as they were
    assert run("--check", "papers/resnet").returncode == 0


def test_a_stage_without_deps_gets_them(tmp_path: Path) -> None:
    root = _code_copy(tmp_path)
    (root / "dvc.yaml").write_text(
        "stages:\n  data:  # a comment\n    cmd: python -m common.data x y\n    outs:\n      - y\n"
    )
    assert pipeline.stale(root, root / "dvc.yaml")
    (root / "dvc.yaml").write_text(pipeline.rewrite(root, root / "dvc.yaml"))
    text = (root / "dvc.yaml").read_text()
    assert text.startswith("stages:\n  data:  # a comment\n    cmd: python -m common.data x y\n"
                           "    deps:\n      - common/config.py\n")  # fmt: skip
    assert "      - common/data.py\n" in text
    assert text.endswith("    outs:\n      - y\n")
    assert pipeline.stale(root, root / "dvc.yaml") == []


def test_class_paths_anywhere_in_params_are_deps() -> None:
    params = {
        "networks": {"a": {"model": {"depth": 8}, "callbacks": [
            {"class_path": "papers.x.callbacks.WarmUp"}]}},
        "profiles": {"paper": {"model": {"class_path": "papers.x.model.Net"},
                               "hooks": {"module": "papers.x.hooks"}}},
    }  # fmt: skip
    assert set(pipeline.class_path_modules(params)) == {
        "papers.x.callbacks", "papers.x.model", "papers.x.hooks"
    }  # fmt: skip


def test_closure_follows_lazy_imports() -> None:
    files = {
        p.relative_to(REPO).as_posix() for p in pipeline.module_closure(REPO, {"common.train"})
    }
    assert {"common/training.py", "common/config.py"} <= files  # training: imported in main()


def _tracked_copy(root: Path) -> Path:
    """The tracked files of the working tree (a fresh clone: no data, runs or results)."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)  # DVC's repository lives in git
    return root


def stale_lock_entries(status: dict[str, Any]) -> list[str]:
    """What `dvc status --json` says beyond "not run here yet": a dep, param or command that
    differs from the committed lock (an output deleted or not in cache is only missing)."""
    stale = []
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):  # "always changed": the root stages that print
                continue
            for kind, entries in change.items():
                missing = kind in ("changed outs", "changed deps") and all(
                    state in ("deleted", "not in cache") for state in entries.values()
                )
                if not missing:
                    stale.append(f"{stage}: {kind}: {entries}")
    return stale


def test_committed_locks_match_the_code_beside_them(tmp_path: Path) -> None:
    """Issue 19: `dvc status` on a fresh clone says only what is not run there yet. The committed
    dvc.lock files are those of the measured default-profile runs (each paper's README states
    them): a change to what a stage runs means running that paper again and committing its lock
    (or, for a change shown to leave the numbers bit-identical, `dvc commit` of its stages, which
    the paper's README then says)."""
    root = _tracked_copy(tmp_path)
    locked = sorted(p.with_name("dvc.yaml") for p in root.glob("papers/*/dvc.lock"))
    targets = [str(p.relative_to(root)) for p in locked]  # a paper not run yet has no lock
    dvc = str(REPO / ".venv" / "bin" / "dvc")
    result = subprocess.run(
        [dvc, "status", "--json", "data/dvc.yaml:data@fashion_mnist", *targets],
        cwd=root, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert stale_lock_entries(json.loads(result.stdout)) == []


def test_a_changed_module_is_a_stale_lock_entry(tmp_path: Path) -> None:
    status = {"papers/x/dvc.yaml:train@a": [{"changed deps": {"common/training.py": "modified"}}],
              "papers/x/dvc.yaml:train@b": [{"changed outs": {"runs/b/ckpt": "not in cache"}}],
              "papers/x": ["always changed"]}  # fmt: skip
    assert stale_lock_entries(status) == [
        "papers/x/dvc.yaml:train@a: changed deps: {'common/training.py': 'modified'}"
    ]
