"""Every paper has a notebook; each runs headless with papermill, and says what to run when its
paper has no results. (Each notebook redraws real smoke-run results in tests/test_pipelines.py.)"""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

REPO = Path(__file__).resolve().parents[1]
PAPERS = sorted(p.parent.name for p in (REPO / "papers").glob("*/dvc.yaml"))
MAX_BYTES = 300_000  # committed executed with its figures, but small


def execute_notebook(
    notebook: Path, paper_dir: Path, out: Path, parameter: str = "paper_dir"
) -> list[dict]:
    """Execute `notebook` on `paper_dir` (papermill raises on a cell error); return all outputs."""
    papermill.execute_notebook(
        str(notebook), str(out), parameters={parameter: str(paper_dir)},
        kernel_name="python3", cwd=str(out.parent), progress_bar=False,
    )  # fmt: skip
    outputs = [o for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    return outputs


def output_text(outputs: list[dict]) -> str:
    parts = [o.get("text", "") for o in outputs]
    parts += [o.get("data", {}).get("text/markdown", "") for o in outputs]
    return "\n".join(parts)


@pytest.mark.parametrize("paper", PAPERS)
def test_notebook_without_results_says_how_to_get_them(paper: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    outputs = execute_notebook(REPO / "notebooks" / f"{paper}.ipynb", empty, tmp_path / "o.ipynb")
    assert "No results yet" in output_text(outputs)
    assert f"dvc repro papers/{paper}" in output_text(outputs)
    assert not [o for o in outputs if "image/png" in o.get("data", {})]


@pytest.mark.parametrize("paper", PAPERS)
def test_committed_notebook_takes_a_paper_dir_and_is_small(paper: str) -> None:
    path = REPO / "notebooks" / f"{paper}.ipynb"
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert code[0].source.startswith("paper_dir = ")
    assert path.stat().st_size < MAX_BYTES
