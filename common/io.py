"""Atomic writes: an interrupted or failed run leaves the old file or none, never half of one.

A temporary file is named after its target and its writer's process id; a writer killed before it
could clean up (kill -9) leaves it behind, and the next write of the same target removes it.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def short_error(err: BaseException) -> str:
    """An exception as a short one-line reason: its type and the first sentence of its message
    (torch's loader errors run to paragraphs of advice that would break the one-line rule)."""
    lines = str(err).strip().splitlines() or [""]
    return f"{type(err).__name__}: {lines[0].split('. ')[0]}"[:160]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        pass
    return True


def _remove_leftovers(path: Path) -> None:
    """Delete temporary files of `path` whose writer process no longer runs."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.tmp*.*"):
        pid = tmp.name[len(path.name) + 5 :].partition(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp{os.getpid()}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic(path, lambda tmp: torch.save(obj, tmp))
