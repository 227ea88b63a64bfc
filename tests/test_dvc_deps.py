"""Every DVC stage lists, as deps, each repo module its command runs: the `python -m` module, what
it imports (transitively, lazy imports included), and the modules its `class_path`s load — from
the paper's params.yaml for training and the check stage (with the paper's `checks.py`), from
published.yaml for the key table. A missing dep leaves
stale results that DVC reports as up to date."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "papers")


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Repo modules `path` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def module_closure(root: Path, modules: set[str]) -> set[Path]:
    """The files of `modules` and of every repo module they import, transitively."""
    seen: set[Path] = set()
    todo = list(modules)
    while todo:
        path = _module_file(root, todo.pop())
        if path and path not in seen:
            seen.add(path)
            todo += _imports(path)
    return seen


def class_path_modules(tree: Any) -> Iterator[str]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "class_path" and isinstance(value, str):
                yield value.rpartition(".")[0]
            else:
                yield from class_path_modules(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from class_path_modules(value)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def needed(root: Path, folder: Path, cmd: str) -> set[Path]:
    """The repo files a stage's command runs."""
    modules = set(re.findall(r"python3?\s+-m\s+([\w.]+)", cmd))
    if modules & {"common.train", "common.check"}:
        modules |= set(class_path_modules(_yaml(folder / "params.yaml")))
    if modules & {"common.check", "common.table"} and (folder / "checks.py").is_file():
        modules.add(f"papers.{folder.name}.checks")  # the paper's own checks, imported by name
    if re.search(r"common\.table\s+build", cmd):
        modules |= set(class_path_modules(_yaml(folder / "published.yaml")))
    return module_closure(root, modules)


def missing_deps(root: Path) -> list[str]:
    """`dvc.yaml:stage: file` for every repo file a stage runs but does not list as a dep."""
    missing = []
    for dvc_file in [root / "dvc.yaml", *sorted(root.glob("papers/*/dvc.yaml"))]:
        folder = dvc_file.parent
        for name, stage in (_yaml(dvc_file).get("stages") or {}).items():
            cmd = stage["cmd"] if isinstance(stage["cmd"], str) else " ".join(stage["cmd"])
            wdir = folder / stage.get("wdir", ".")
            deps = [
                (wdir / (d if isinstance(d, str) else next(iter(d)))).resolve()
                for d in stage.get("deps", [])
            ]
            for path in sorted(needed(root, folder, cmd)):
                if not any(path == d or d in path.parents for d in deps):
                    missing.append(f"{dvc_file.relative_to(root)}:{name}: {path.relative_to(root)}")
    return missing


def test_every_stage_lists_the_modules_it_runs() -> None:
    assert missing_deps(REPO) == []


def test_a_removed_dep_is_reported(tmp_path: Path) -> None:
    for name in ("dvc.yaml", "common", "papers"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, tmp_path / name)
    dvc_file = tmp_path / "papers/resnet/dvc.yaml"
    text = dvc_file.read_text()
    assert "      - common/metrics.py\n" in text
    dvc_file.write_text(text.replace("      - common/metrics.py\n", "", 1))
    assert [m for m in missing_deps(tmp_path) if m.endswith("common/metrics.py")]


def test_closure_follows_lazy_imports() -> None:
    files = {p.relative_to(REPO).as_posix() for p in module_closure(REPO, {"common.train"})}
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
    them): a change to what a stage runs means running that paper again and committing its lock."""
    root = _tracked_copy(tmp_path)
    targets = [str(p.relative_to(root)) for p in sorted(root.glob("papers/*/dvc.yaml"))]
    dvc = str(REPO / ".venv" / "bin" / "dvc")
    result = subprocess.run(
        [dvc, "status", "--json", "data@fashion_mnist", *targets],
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
