"""Every DVC stage lists, as deps, each repo module its command runs: the `python -m` module, what
it imports (transitively, lazy imports included), and the modules its `class_path`s load — from
the paper's params.yaml for training and the check stage (with the paper's `checks.py`), from
published.yaml for the key table. A missing dep leaves
stale results that DVC reports as up to date."""

from __future__ import annotations

import ast
import re
import shutil
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
