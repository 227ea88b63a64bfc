"""`python -m common.pipeline`: every DVC stage's code deps, generated from what the stage runs.

A stage's code deps are the repo files its command runs: the `python -m` module and every repo
module it imports (transitively, imports inside functions included; a package's `__init__.py`
when it is imported by name), plus the modules named by `class_path` (or `module`) anywhere in the
paper's params.yaml, for the check and training stages and any stage given `--params` (every
profile: a switch of profile must re-run), the paper's `checks.py` for the check and table stages,
and the `class_path`s of published.yaml for the table. A paper that imports the one it extends
(`papers.resnet.model`) gets that paper's files through the imports. A missing dep leaves stale
results that DVC reports as up to date; an extra one re-runs a stage for nothing.

    python -m common.pipeline papers/<paper>   # rewrite its dvc.yaml's code deps (`.`, `data`)
    python -m common.pipeline --check          # every dvc.yaml of the repo; 1 if stale

Only the code deps (`common/*.py`, `papers/**/*.py` entries) are rewritten, sorted, after the
stage's other deps (data, params files, checked.txt, runs folders), which keep their order, lines
and comments; so does everything else in the file. Run from the repo root.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PACKAGES = ("common", "papers")
ROOT_TARGET = "."  # the root dvc.yaml (papers' stages, the summary), named on the command line


def module_file(root: Path, module: str) -> Path | None:
    """The file of repo module `module` (`a.b` → a/b.py or a/b/__init__.py), if there is one."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports(path: Path) -> set[str]:
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
        path = module_file(root, todo.pop())
        if path and path not in seen:
            seen.add(path)
            todo += imports(path)
    return seen


def class_path_modules(tree: Any) -> Iterator[str]:
    """The modules a params or published tree loads, at any depth: the module of every
    `class_path: module.Class`, and every `module: a.b` (lists and mappings alike)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "class_path" and isinstance(value, str):
                yield value.rpartition(".")[0]
            elif key == "module" and isinstance(value, str):
                yield value
            else:
                yield from class_path_modules(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from class_path_modules(value)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def needed(root: Path, folder: Path, cmd: str) -> set[Path]:
    """The repo files a stage's command runs (`folder`: its dvc.yaml's folder)."""
    modules = set(re.findall(r"python3?\s+-m\s+([\w.]+)", cmd))
    if modules & {"common.train", "common.check"} or "--params" in cmd:  # builds what params name
        modules |= set(class_path_modules(_yaml(folder / "params.yaml")))
    if modules & {"common.check", "common.table"} and (folder / "checks.py").is_file():
        modules.add(f"papers.{folder.name}.checks")  # the paper's own checks, imported by name
    if re.search(r"common\.table\s+build", cmd):
        modules |= set(class_path_modules(_yaml(folder / "published.yaml")))
    return module_closure(root, modules)


def is_code(root: Path, path: Path) -> bool:
    """A repo module: a `.py` file under common/ or papers/."""
    parts = path.relative_to(root).parts if path.is_relative_to(root) else ()
    return len(parts) > 1 and parts[0] in PACKAGES and path.suffix == ".py"


@dataclass
class Plan:
    """One stage's code deps: those it lists and those it runs (paths as written, from `wdir`)."""

    stage: str
    listed: list[str]
    wanted: list[str]

    @property
    def lacks(self) -> list[str]:
        return [p for p in self.wanted if p not in self.listed]

    @property
    def extra(self) -> list[str]:
        return [p for p in self.listed if p not in self.wanted]


def _dep_path(dep: Any) -> str:
    return dep if isinstance(dep, str) else next(iter(dep))


def plans(root: Path, dvc_file: Path) -> list[Plan]:
    """What each stage of `dvc_file` lists as code deps, and what it should."""
    root, folder = root.resolve(), dvc_file.resolve().parent
    found = []
    for name, stage in (_yaml(dvc_file).get("stages") or {}).items():
        cmd = stage.get("cmd", "")
        cmd = cmd if isinstance(cmd, str) else " ".join(cmd)
        wdir = (folder / stage.get("wdir", ".")).resolve()
        deps = [_dep_path(d) for d in stage.get("deps") or []]
        resolved = {d: (wdir / d).resolve() for d in deps if "${" not in d}
        listed = [d for d, path in resolved.items() if is_code(root, path)]
        folders = [path for d, path in resolved.items() if d not in listed]  # a folder dep covers
        wanted = sorted(
            os.path.relpath(path, wdir)
            for path in needed(root, folder, cmd)
            if not any(f in path.parents for f in folders)
        )
        if listed or wanted:
            found.append(Plan(name, listed, wanted))
    return found


def target_name(root: Path, dvc_file: Path) -> str:
    """How the command line names `dvc_file`: its folder (`papers/<paper>`, `data`), `.` for the
    root's."""
    folder = dvc_file.resolve().parent.relative_to(root.resolve())
    return ROOT_TARGET if folder == Path() else folder.as_posix()


def stale(root: Path, dvc_file: Path) -> list[str]:
    """One line per code dep a stage lacks or lists without running it, with the fix."""
    name = dvc_file.resolve().relative_to(root.resolve()).as_posix()
    fix = f"(fix: python -m common.pipeline {target_name(root, dvc_file)})"
    lines = []
    for plan in plans(root, dvc_file):
        lines += [f"{name}: stage {plan.stage} lacks {p} {fix}" for p in plan.lacks]
        lines += [f"{name}: stage {plan.stage} lists {p}, which it does not run {fix}"
                  for p in plan.extra]  # fmt: skip
    return lines


def dvc_files(root: Path) -> list[Path]:
    """The root dvc.yaml, the data sets' and every paper's, in that order."""
    data = [root / "data" / "dvc.yaml"] if (root / "data" / "dvc.yaml").is_file() else []
    return [root / "dvc.yaml", *data, *sorted(root.glob("papers/*/dvc.yaml"))]


# The line-based rewrite: a stage is a key one level under `stages:`; its `deps:` a key one level
# under the stage, holding `- path  # comment` lines.
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[^\s#'\"][^:]*?|'[^']*'|\"[^\"]*\"):(?:\s+#.*)?\s*$")
_ENTRY = re.compile(
    r"^(?P<indent> *)- (?P<quote>['\"]?)(?P<path>[^\s#'\"{:]+)(?P=quote)(?P<comment>\s+#.*)?\s*$"
)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" ")) if line.strip() else -1


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """The index after the block opened at `start`: the lines indented more than `indent` (or
    blank, when more such lines follow)."""
    end = i = start + 1
    while i < len(lines):
        if _indent(lines[i]) > indent or (
            _indent(lines[i]) == indent and lines[i].lstrip().startswith("- ")
        ):  # a YAML list may sit at its key's indent
            end = i + 1
        elif lines[i].strip():
            break
        i += 1
    return end


def _stage_spans(lines: list[str]) -> dict[str, tuple[int, int, int]]:
    """Each stage's (first line, end, indent of its keys)."""
    top = next((i for i, line in enumerate(lines) if line.rstrip() == "stages:"), None)
    if top is None:
        return {}
    end = _block_end(lines, top, 0)
    spans: dict[str, tuple[int, int, int]] = {}
    stage_indent = None
    i = top + 1
    while i < end:
        match = _KEY.match(lines[i])
        if match and not lines[i].lstrip().startswith("#"):
            indent = len(match["indent"])
            stage_indent = indent if stage_indent is None else stage_indent
            if indent == stage_indent:
                stage_end = _block_end(lines, i, indent)
                keys = [_indent(lines[j]) for j in range(i + 1, stage_end) if _KEY.match(lines[j])]
                spans[match["key"].strip("'\"")] = (i, stage_end, min(keys, default=indent + 2))
                i = stage_end
                continue
        i += 1
    return spans


def _rewrite_stage(lines: list[str], span: tuple[int, int, int], plan: Plan) -> list[str]:
    """The stage's lines with its code deps replaced by `plan.wanted`."""
    start, end, key_indent = span
    stage = lines[start:end]
    deps = next(
        (i for i, line in enumerate(stage)
         if _indent(line) == key_indent and line.strip().split("#")[0].strip() == "deps:"),
        None,
    )  # fmt: skip
    if deps is None:  # no deps yet: a `deps:` key after the command
        cmd = next(i for i, line in enumerate(stage) if line.lstrip().startswith("cmd:"))
        at = _block_end(stage, cmd, key_indent)
        entry = " " * (key_indent + 2)
        new = [" " * key_indent + "deps:\n", *(f"{entry}- {p}\n" for p in plan.wanted)]
        return [*stage[:at], *new, *stage[at:]]
    block_end = _block_end(stage, deps, key_indent)
    while block_end > deps + 1 and not stage[block_end - 1].strip():
        block_end -= 1  # the blank lines after the block stay after it
    kept, code = [], {}
    entry_indent = key_indent + 2
    for line in stage[deps + 1 : block_end]:
        match = _ENTRY.match(line)
        if match and match["path"] in plan.listed:
            code[match["path"]] = line
        else:
            kept.append(line)
        if match:
            entry_indent = len(match["indent"])
    new = [code.get(p, f"{' ' * entry_indent}- {p}\n") for p in plan.wanted]
    return [*stage[: deps + 1], *kept, *new, *stage[block_end:]]


def rewrite(root: Path, dvc_file: Path) -> str:
    """`dvc_file`'s text with every stage's code deps set to what it runs (sorted, after its
    other deps); the rest of the text as it was."""
    text = dvc_file.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    spans = _stage_spans(lines)
    todo = [plan for plan in plans(root, dvc_file) if plan.listed != plan.wanted]
    for plan in sorted(todo, key=lambda p: spans[p.stage][0], reverse=True):  # bottom up
        start, end, _ = spans[plan.stage]
        lines[start:end] = _rewrite_stage(lines, spans[plan.stage], plan)
    return "".join(lines)


def _dvc_file(root: Path, target: str) -> Path:
    path = Path(target)
    path = path if path.name == "dvc.yaml" else path / "dvc.yaml"
    if not path.is_file():
        sys.exit(f"error: {target}: no dvc.yaml there (a paper folder papers/<name>, data, or .)")
    if not path.resolve().is_relative_to(root.resolve()):
        sys.exit(f"error: {target}: not in this repo ({root})")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="papers/<paper>, data or . (default: all)")
    parser.add_argument("--check", action="store_true", help="say what is stale, change nothing")
    args = parser.parse_args(argv)
    root = Path.cwd()
    if not (root / "dvc.yaml").is_file() or not (root / "papers").is_dir():
        sys.exit("error: cwd: run from the repo root (where common/ and dvc.yaml are)")
    files = [_dvc_file(root, t) for t in args.targets] or dvc_files(root)
    if args.check:
        lines = [line for f in files for line in stale(root, f)]
        print("\n".join(lines) if lines else f"{len(files)} dvc.yaml files: code deps up to date")
        sys.exit(1 if lines else 0)
    for dvc_file in files:
        name = dvc_file.resolve().relative_to(root.resolve()).as_posix()
        text = rewrite(root, dvc_file)
        if text == dvc_file.read_text():
            print(f"{name}: code deps up to date")
            continue
        changes = [f"{p.stage} +{len(p.lacks)} -{len(p.extra)}" for p in plans(root, dvc_file)
                   if p.lacks or p.extra]  # fmt: skip
        dvc_file.write_text(text)
        print(f"{name}: code deps rewritten ({', '.join(changes) or 'order'})")


if __name__ == "__main__":
    main()
