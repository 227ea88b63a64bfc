"""What every paper's notebook does the same way: find the paper folder, show a figure inline."""

from __future__ import annotations

import io
from pathlib import Path

from IPython.display import Image, display
from matplotlib.figure import Figure


def find_paper_dir(path: str | Path) -> Path:
    """An absolute path as is; else the first of cwd, cwd/notebooks and cwd's parents that holds
    it (Jupyter runs a notebook in notebooks/, papermill wherever it is told)."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    cwd = Path.cwd()
    found = [b / path for b in (cwd, cwd / "notebooks", *cwd.parents) if (b / path).is_dir()]
    return (found[0] if found else cwd / path).resolve()


def show(fig: Figure, dpi: int = 80) -> None:
    """Display `fig` as an inline PNG (drawn on a bare Figure: no pyplot, no GUI backend)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    display(Image(buffer.getvalue()))
