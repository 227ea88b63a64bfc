"""Run the notebooks headlessly with papermill on fake-but-format-faithful pipeline outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "stochastic_depth.ipynb"
PAPER = REPO / "papers" / "stochastic_depth"
COMMAND = "dvc repro papers/stochastic_depth"
# common.training.HISTORY_FIELDS, retyped: importing it would load Lightning
HISTORY = "epoch,lr,train_loss,train_error,val_loss,val_error,test_loss,test_error,train_time_s"


def _fake_run(runs: Path, arm: str, seed: int, epochs: int = 4) -> dict:
    """history.csv and metrics.json as common.training.fit writes them."""
    out = runs / f"{arm}-fashion_mnist-s{seed}"
    out.mkdir(parents=True)
    gain = 2.0 if arm == "stochastic" else 0.0
    rows, seconds = [], (7.5 if arm == "stochastic" else 10.0) + seed * 0.2
    for e in range(1, epochs + 1):
        test = 40 / e + 10 - gain + seed
        rows.append(
            f"{e},0.1,{2 / e:.6g},{35 / e + 8:.6g},{2.1 / e:.6g},{test + 1:.6g},"
            f"{2.2 / e:.6g},{test:.6g},{seconds + e * 0.01:.6g}"
        )
    (out / "history.csv").write_text("\n".join([HISTORY, *rows]) + "\n")
    train_time = sum(float(r.rsplit(",", 1)[1]) for r in rows)
    metrics = {
        "paper": "stochastic_depth", "profile": "default", "arm": arm, "dataset": "fashion_mnist",
        "seed": seed, "precision": "32-true", "select": "lowest_val", "epochs": epochs,
        "steps": 47 * epochs, "train_images": 6000, "config_digest": "0123456789abcdef",
        "params": 852730, "macs": 95849344, "selected_epoch": epochs,
        "test_error": float(rows[-1].split(",")[7]), "val_error": float(rows[-1].split(",")[5]),
        "final_train_error": 16.75, "final_test_error": float(rows[-1].split(",")[7]),
        "train_time_s": train_time, "time_per_epoch_s": train_time / epochs,
    }  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """2 arms × 2 seeds × Fashion-MNIST, and the key table common.table builds from them."""
    from common.table import build_rows, to_markdown

    paper = tmp_path_factory.mktemp("stochastic_depth")
    shutil.copy(PAPER / "published.yaml", paper)
    runs = [_fake_run(paper / "runs", a, s) for a in ("constant", "stochastic") for s in (0, 1)]
    published = yaml.safe_load((paper / "published.yaml").read_text())
    rows = build_rows(published, runs)
    table, title = paper / "results", published["title"]
    table.mkdir()
    (table / "table.json").write_text(json.dumps({"title": title, "rows": rows}, indent=2))
    (table / "table.md").write_text(to_markdown(title, rows))
    return paper


def _run(paper: Path, out: Path) -> list[dict]:
    """Execute the notebook (papermill raises on a cell error); return all outputs."""
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), parameters={"paper_dir": str(paper)}, kernel_name="python3",
        cwd=str(out.parent), progress_bar=False,
    )  # fmt: skip
    outputs = [o for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    return outputs


def _text(outputs: list[dict]) -> str:
    parts = [o.get("text", "") for o in outputs]
    parts += [o.get("data", {}).get("text/markdown", "") for o in outputs]
    return "\n".join(parts)


def test_notebook_redraws_results(results: Path, tmp_path: Path) -> None:
    outputs = _run(results, tmp_path / "out.ipynb")
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # Fig. 3-style curves, training time
    text = _text(outputs)
    assert "Deep Networks with Stochastic Depth — Table 1" in text  # the key table, displayed
    assert "| Training-time saving of stochastic depth [fashion_mnist] |" in text
    assert "published: 27% saving (Table 2" in text
    assert "No results yet" not in text


def test_notebook_without_results_says_how_to_get_them(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    outputs = _run(empty, tmp_path / "out.ipynb")
    text = _text(outputs)
    assert "No results yet" in text and COMMAND in text
    assert not [o for o in outputs if "image/png" in o.get("data", {})]


def test_committed_notebook_is_clean() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
