"""setup.sh with no suitable Python: one line naming the version it needs and how to get it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("bash", "cat", "sha256sum", "cut", "id", "dirname", "grep", "head")  # what setup.sh runs


@pytest.fixture
def bare_machine(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of setup.sh's inputs (no .venv) and a PATH holding only the tools it calls."""
    for name in ("setup.sh", "pyproject.toml", "constraints.txt"):
        shutil.copy2(REPO / name, tmp_path / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return tmp_path, bin_dir


def _setup(folder: Path, bin_dir: Path) -> subprocess.CompletedProcess:
    env = {"HOME": str(folder), "PATH": str(bin_dir)}
    return subprocess.run(
        ["bash", "./setup.sh"], cwd=folder, env=env, capture_output=True, text=True, timeout=60
    )


def _fake_python(bin_dir: Path, version: str) -> None:
    """A `python3` that reports `version` and fails every other command, as 3.11's check does."""
    script = bin_dir / "python3"
    script.write_text(f'#!/bin/bash\n[ "$1" = --version ] && echo "Python {version}" || exit 1\n')
    script.chmod(0o755)


@pytest.mark.parametrize("version", [None, "3.12.1"])
def test_no_python_311_is_one_line_naming_the_version(bare_machine, version: str | None) -> None:
    folder, bin_dir = bare_machine
    if version:
        _fake_python(bin_dir, version)
    result = _setup(folder, bin_dir)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("setup: error: Python 3.11 is needed")
    assert f"found Python {version}" in lines[0] if version else "found none" in lines[0]
    assert "apt-get install python3.11" in lines[0]
    assert not (folder / ".venv").exists()
