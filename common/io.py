"""Atomic writes: an interrupted or failed run leaves the old file or none, never half of one.

A temporary file is named after its target and its writer's process id; a writer killed before it
could clean up (kill -9) leaves it behind, and the next write of the same target removes it (or
`remove_leftovers`, for a file whose writer may never run again). `exclusive` makes one writer of
a run at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
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


def remove_leftovers(path: Path) -> None:
    """Delete temporary files of `path` whose writer process no longer runs."""
    path = Path(path)
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.tmp*.*"):
        pid = tmp.name[len(path.name) + 5 :].partition(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
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
    """`torch.save` to `path` atomically. Through memory: torch names the archive's records after
    the file it writes, and the temporary file's random name would make every save's bytes differ
    (a DVC output that changes on each identical run)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


class BusyError(Exception):
    """Another live process holds the lock: one line, `<what> is being written by ...`."""


@contextlib.contextmanager
def exclusive(lock: Path, what: str) -> Iterator[None]:
    """Hold `lock` (a file holding its holder's pid) exclusively while the block runs, or raise
    BusyError at once. An flock: the kernel releases it when its process dies, even by kill -9,
    so a stale lock never blocks; the file of a killed holder stays (.dvcignore, .gitignore).
    Folders made for the file go with it if left empty: a run refused on bad input leaves none."""
    lock = Path(lock)
    made = [d for d in (lock.parent, *lock.parent.parents) if not d.exists()]
    fd = _acquire(lock, what)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        lock.unlink(missing_ok=True)  # still held: no other process has locked this file
        os.close(fd)
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):  # not empty: the run's, or another run's lock
                folder.rmdir()


def _acquire(lock: Path, what: str) -> int:
    """An open descriptor of `lock`, flocked; BusyError if another process holds it."""
    while True:
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # another writer removed the folder it made: make it again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BusyError(
                f"{what} is being written by another process (pid {holder}); wait for it, or stop "
                f"it and run again (it resumes from its last checkpoint)"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)  # its last holder removed the file as this one opened it: lock the new one
