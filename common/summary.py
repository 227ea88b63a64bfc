"""`python -m common.summary`: every paper side by side, from whatever results exist.

Reads each paper folder's key table (`results/table.json`) and finished runs, and writes
`results/summary.json` (every point and table row), `results/summary.md` (every key-table row
with its verdict, the verdicts counted per paper, the papers without results named) and three
figures, test error against parameters, multiply-adds and training time: one marker per family
(the paper folder that defines the network's class), the default profile's runs and the paper
profile's apart, the published points (the papers' own test errors, their networks counted here)
beside ours. `notebooks/comparison.ipynb` draws the same figures from summary.json through
`figure`. It runs no training: `dvc repro summary` takes seconds; `dvc repro` runs every paper's
default profile first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from common.io import _atomic, atomic_write_json, atomic_write_text
from common.pipeline import module_closure
from common.results import SUMMARY_METRICS, family, load_runs, load_table
from common.table import VERDICTS, _ours_text, verdict_counts

REPO = Path(__file__).resolve().parents[1]
OUT = Path("results")
COUNTS = "published_counts.json"  # a paper's Counts, in its folder, committed: a clone has them
MEASURES = ("params", "macs", "train_time_s")  # the figures' x axes
PROFILES = ("default", "paper")  # a figure's two panels (a smoke run is neither: left out)
MARKERS = "osD^v<>pP*Xh"


def paper_dirs(root: Path) -> list[Path]:
    """Every paper folder (one with a params.yaml), sorted by name."""
    return sorted(p.parent for p in (root / "papers").glob("*/params.yaml"))


def _mean(values: list[Any]) -> float | None:
    numbers = [v for v in values if isinstance(v, int | float)]
    return statistics.fmean(numbers) if numbers else None


def our_points(paper_dir: Path) -> list[dict[str, Any]]:
    """One point per (profile, arm, data set) of the paper's finished runs: the seeds' means."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for run in load_runs(paper_dir, finished_only=True):
        record = run.metrics
        groups[(record.get("profile"), run.arm, run.dataset)].append(record)
    points = []
    for (profile, arm, dataset), records in sorted(groups.items(), key=str):
        point = {
            "paper": paper_dir.name, "family": records[0].get("family", paper_dir.name),
            "network": arm, "dataset": dataset, "profile": profile, "source": "ours",
            "seeds": len(records), "device": records[0].get("device"),
        }  # fmt: skip
        point |= {m: _mean([r.get(m) for r in records]) for m in SUMMARY_METRICS}
        points.append(point)
    return points


def _count(model: dict[str, Any], dataset: str) -> dict[str, int]:
    """Parameters and multiply-adds of a network as `common.training.fit` counts them (on the
    CPU: on the meta device an adaptive ODE solver cannot run, and every op is slower)."""
    from common.config import build_model
    from common.datasets import DATASETS
    from common.metrics import count_macs, count_params

    info = DATASETS[dataset]
    network = build_model(model, info.shape[0], info.num_classes)
    return {"params": count_params(network), "macs": count_macs(network, (1, *info.shape))}


class Counts:
    """Counts of a paper's networks, kept in its folder's `COUNTS` (committed) between runs: a
    1001-layer network takes ~15 s to count on a 2-core CPU, every published network together
    minutes. An entry is keyed by the network, the data set and the digest of the code that builds
    it (its module and what that imports), so a change to a model counts that model again."""

    def __init__(self, paper_dir: Path) -> None:
        self.path = paper_dir / COUNTS
        self.known = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.used: dict[str, dict[str, int]] = {}

    def _key(self, model: dict[str, Any], dataset: str) -> str:
        module = str(model["class_path"]).rpartition(".")[0]
        digest = hashlib.sha256()
        for path in sorted(module_closure(REPO, {module})):  # the code that builds it
            digest.update(path.read_bytes())
        spec = json.dumps(model, sort_keys=True)
        return f"{spec} {dataset} {digest.hexdigest()[:12]}"

    def __call__(self, model: dict[str, Any], dataset: str) -> dict[str, int]:
        key = self._key(model, dataset)
        self.used[key] = self.known.get(key) or _count(model, dataset)
        return self.used[key]

    def save(self) -> None:
        """Keep the entries this run used (a stale one goes)."""
        if self.used != self.known:
            atomic_write_json(self.path, self.used)


def published_points(paper_dir: Path, count: Counts) -> tuple[list[dict[str, Any]], list[str]]:
    """The paper's own test errors of named networks (published.yaml rows of one arm on one data
    set), each network counted as the paper profile builds it; and the rows that could not be."""
    from common.config import load_params, merge
    from common.published import load_published

    params = load_params(paper_dir / "params.yaml")
    profile = params["profiles"]["paper"]
    points, uncounted = [], []
    for row in load_published(paper_dir / "published.yaml")["rows"]:
        ours, value = row.get("ours", {}), row.get("published")
        if ours.get("metric") != "test_error" or "arm" not in ours or "dataset" not in ours:
            continue
        if not isinstance(value, int | float):
            continue
        arm, dataset = ours["arm"], ours["dataset"]
        if dataset not in profile.get("datasets", {}) or arm not in params["networks"]:
            uncounted.append(
                f"{paper_dir.name}: {row['id']} (no {arm} on {dataset} in the paper profile)"
            )
            continue
        # The network as `config.resolve` merges it (resolve also builds it, to check it: slower).
        layers = (profile, profile["datasets"][dataset], params["networks"][arm])
        model: dict[str, Any] = {}
        for layer in layers:
            model = merge(model, layer.get("model") or {})
        points.append({
            "paper": paper_dir.name, "family": family(model), "network": arm,
            "dataset": dataset, "profile": "paper", "source": "published",
            "reference": row.get("source", ""), "test_error": float(value),
            **count(model, dataset),
        })  # fmt: skip
    return points, uncounted


def table_rows(paper: str, table: dict[str, Any]) -> list[dict[str, Any]]:
    """The key table's rows as the summary lists them."""
    return [
        {"paper": paper, "id": r["id"], "name": r["name"], "published": r["published"],
         "ours": _ours_text(r), "verdict": r["verdict"]}
        for r in table["rows"]
    ]  # fmt: skip


def gather(root: Path) -> dict[str, Any]:
    """Everything the summary shows, from the papers under `root` as they are now."""
    summary: dict[str, Any] = {"papers": [], "missing": [], "points": [], "rows": [],
                               "verdicts": {}, "uncounted": []}  # fmt: skip
    for paper_dir in paper_dirs(root):
        paper, table, count = paper_dir.name, load_table(paper_dir), Counts(paper_dir)
        published, uncounted = published_points(paper_dir, count)
        count.save()
        summary["points"] += our_points(paper_dir) + published
        summary["uncounted"] += uncounted
        if table is None:
            summary["missing"].append(paper)
            continue
        summary["papers"].append(paper)
        summary["rows"] += table_rows(paper, table)
        summary["verdicts"][paper] = verdict_counts(table["rows"], table.get("regime"))
    return summary


def _families(points: list[dict[str, Any]]) -> list[str]:
    return sorted({p["family"] for p in points})


def figure(summary: dict[str, Any], measure: str) -> Figure:
    """Test error against `measure` (params, macs or train_time_s): a panel per profile, one
    series per family and source (ours filled, published hollow), every point labelled."""
    fig = Figure(figsize=(12, 4.8))
    axes = fig.subplots(1, len(PROFILES), squeeze=False)[0]
    families = _families(summary["points"])
    for ax, profile in zip(axes, PROFILES, strict=True):
        shown = [p for p in summary["points"] if p["profile"] == profile
                 and p.get(measure) is not None and p.get("test_error") is not None]  # fmt: skip
        for i, name in enumerate(families):
            for source in ("ours", "published"):
                points = [p for p in shown if p["family"] == name and p["source"] == source]
                if not points:
                    continue
                x, y = [p[measure] for p in points], [p["test_error"] for p in points]
                filled = dict(color=f"C{i % 10}") if source == "ours" else dict(
                    facecolors="none", edgecolors=f"C{i % 10}")  # fmt: skip
                ax.scatter(x, y, marker=MARKERS[i % len(MARKERS)], label=f"{name} ({source})",
                           **filled)  # fmt: skip
                for p in points:
                    ax.annotate(p["network"], (p[measure], p["test_error"]), fontsize=6,
                                xytext=(3, 3), textcoords="offset points")  # fmt: skip
        if measure != "train_time_s" and shown:
            ax.set_xscale("log")
        data = sorted({p["dataset"] for p in shown})
        ax.set_title(f"{profile} profile ({', '.join(data) or 'no runs yet'})", fontsize=10)
        ax.set_xlabel(SUMMARY_METRICS[measure])
        ax.set_ylabel(SUMMARY_METRICS["test_error"])
        if shown:
            ax.legend(fontsize=7)
    fig.suptitle(f"Test error against {SUMMARY_METRICS[measure]}, every paper")
    fig.tight_layout()
    return fig


def to_markdown(summary: dict[str, Any]) -> str:
    lines = ["# Every paper's key table", ""]
    if summary["missing"]:
        missing = ", ".join(summary["missing"])
        lines += [f"No results yet (run `dvc repro papers/<paper>`): {missing}.", ""]
    lines += ["| Paper | Rows | " + " | ".join(VERDICTS) + " | Regime held |",
              "| --- | ---: |" + " ---: |" * len(VERDICTS) + " --- |"]  # fmt: skip
    for paper, counts in summary["verdicts"].items():
        cells = " | ".join(str(counts[v.replace(" ", "_")]) for v in VERDICTS)
        held = {True: "yes", False: "no", None: "—"}[counts["regime_holds"]]
        lines.append(f"| {paper} | {counts['rows']} | {cells} | {held} |")
    lines += [
        "",
        "| Paper | Result | Published | Ours | Verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['paper']} | {r['name']} | {r['published']} | {r['ours']} | {r['verdict']} |"
              for r in summary["rows"]]  # fmt: skip
    if summary["uncounted"]:
        lines += ["", "Published points left out (the network could not be counted):"]
        lines += [f"- {u}" for u in summary["uncounted"]]
    return "\n".join(lines) + "\n"


def write(summary: dict[str, Any], out: Path) -> list[Path]:
    """summary.json, summary.md and the three figures under `out`; the paths written."""
    paths = [out / "summary.json", out / "summary.md"]
    atomic_write_json(paths[0], summary)
    atomic_write_text(paths[1], to_markdown(summary))
    for measure in MEASURES:
        path = out / f"summary_{measure}.png"
        fig = figure(summary, measure)
        _atomic(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=90))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(), help="the repo (default: cwd)")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write (default: results)")
    args = parser.parse_args(argv)
    if not (args.root / "papers").is_dir():
        sys.exit(f"error: --root: {args.root} has no papers/ folder (run from the repo root)")
    summary = gather(args.root)
    args.out.mkdir(parents=True, exist_ok=True)
    write(summary, args.out)
    print(to_markdown(summary), end="")


if __name__ == "__main__":
    main()
