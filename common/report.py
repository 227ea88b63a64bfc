"""`python -m common.report`: the cross-paper W&B report, built with `wandb-workspaces`.

One section across papers (a scatter panel per summary figure: test error against parameters,
multiply-adds and training time, one run set per profile) and one section per paper that has runs
(its key table's verdicts counted, its runs' error and loss curves). The report's definition is
always written to `results/wandb_report.json`; the report itself is saved to W&B only with an
account and a network, and otherwise the command says so in one line and exits 0. Sync the
offline runs first (the README's one command does both).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from common.io import atomic_write_json, short_error
from common.results import SUMMARY_METRICS, load_runs, load_table
from common.summary import MEASURES, PROFILES, paper_dirs
from common.table import VERDICTS, verdict_counts

OUT = Path("results/wandb_report.json")
TITLE = "The ResNet family, every paper side by side"
# Each paper's curves: metrics every run logs per epoch (common.training.Classifier).
CURVES = {"Error (%)": ["train_error", "val_error", "test_error"],
          "Loss": ["train_loss", "val_loss", "test_loss"]}  # fmt: skip


def offline_runs(paper_dir: Path) -> list[Path]:
    """The paper's offline W&B runs, where its training runs leave them (`<paper>/wandb/`)."""
    return sorted(Path(paper_dir).glob("wandb/offline-run-*"))


def _verdicts_line(paper_dir: Path) -> str:
    table = load_table(paper_dir)
    if table is None:
        return "No key table yet (`dvc repro papers/<paper>`)."
    counts = verdict_counts(table["rows"], table.get("regime"))
    cells = ", ".join(f"{counts[v.replace(' ', '_')]} {v}" for v in VERDICTS)
    return f"Key table: {counts['rows']} rows ({cells})."


def build(root: Path, project: str, entity: str) -> Any:
    """The report (a `wandb_workspaces` Report): a section across papers, one per paper with runs
    (finished runs in `runs/` or offline W&B runs), the others named."""
    import wandb_workspaces.reports.v2 as wr

    def runset(name: str, filters: str) -> Any:
        return wr.Runset(entity=entity, project=project, name=name, filters=filters)

    across = [runset(f"{p} profile", f"Config('profile') = '{p}'") for p in PROFILES]
    figures = [
        wr.ScatterPlot(title=f"Test error against {SUMMARY_METRICS[m]}", x=wr.SummaryMetric(m),
                       y=wr.SummaryMetric("test_error"), log_x=m != "train_time_s")
        for m in MEASURES
    ]  # fmt: skip
    blocks = [
        wr.P("Every run of every paper, tagged paper:, family:, profile:, dataset:, arm:, seed:, "
             "precision:, device: (group = paper). Locally: `dvc repro summary`."),
        wr.H1("Across papers"),
        wr.PanelGrid(runsets=across, panels=figures),
    ]  # fmt: skip
    papers = paper_dirs(root)
    present = [d for d in papers if offline_runs(d) or load_runs(d)]
    for paper_dir in present:
        curves = [wr.LinePlot(title=title, x="epoch", y=metrics)
                  for title, metrics in CURVES.items()]  # fmt: skip
        blocks += [
            wr.H2(paper_dir.name),
            wr.P(_verdicts_line(paper_dir)),
            wr.PanelGrid(runsets=[runset(paper_dir.name, f"Group = '{paper_dir.name}'")],
                         panels=curves),
        ]  # fmt: skip
    absent = [d.name for d in papers if d not in present]
    if absent:
        blocks.append(wr.P(f"No runs yet: {', '.join(absent)}."))
    return wr.Report(project=project, entity=entity, title=TITLE, blocks=blocks)


def definition(report: Any) -> dict[str, Any]:
    """The report as W&B stores it (its view spec), as JSON."""
    return json.loads(report._to_model().model_dump_json(by_alias=True, exclude_none=True))


def sections(spec: dict[str, Any]) -> list[str]:
    """The papers the definition has a section for (its level-2 headings)."""
    return [
        "".join(c.get("text", "") for c in b["children"])
        for b in spec["spec"]["blocks"]
        if b["type"] == "heading" and b.get("level") == 2
    ]


def panel_metrics(spec: dict[str, Any]) -> set[str]:
    """Every metric a panel of the definition names (its axes and lines), without the
    `summary:`/`config:` prefix of the scatter axes."""
    names: set[str] = set()
    for block in spec["spec"]["blocks"]:
        if block["type"] != "panel-grid":
            continue
        for panel in block["metadata"]["panelBankSectionConfig"]["panels"]:
            config = panel["config"]
            axes = [config.get(k) for k in ("xAxis", "yAxis")] + config.get("metrics", [])
            names |= {a.split(":", 1)[-1] for a in axes if a}
    return names


def _project(root: Path) -> str:
    shared = yaml.safe_load((root / "params.yaml").read_text()) or {}
    return shared.get("wandb", {}).get("project", "resnet-family")


def _save(report: Any, entity: str | None) -> str:
    """Save the report to W&B; its URL, or raise when there is no account or no network."""
    import wandb

    api = wandb.Api(timeout=20)  # UsageError without an account; an error without a network
    report.entity = entity or api.default_entity
    for runset in (r for b in report.blocks for r in getattr(b, "runsets", [])):
        runset.entity = report.entity
    return report.save().url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(), help="the repo (default: cwd)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the definition (default: {OUT})")
    parser.add_argument("--entity", default=os.environ.get("WANDB_ENTITY"),
                        help="W&B entity (default: WANDB_ENTITY, else your account's)")  # fmt: skip
    args = parser.parse_args(argv)
    if not (args.root / "papers").is_dir():
        sys.exit(f"error: --root: {args.root} has no papers/ folder (run from the repo root)")
    report = build(args.root, _project(args.root), args.entity or "")
    atomic_write_json(args.out, definition(report))
    try:
        url = _save(report, args.entity)
    except Exception as err:  # no account, no network: the definition is what there is
        print(f"report: not saved to W&B ({short_error(err)}); definition in {args.out}")
        return
    print(f"report: {url} (definition in {args.out})")


if __name__ == "__main__":
    main()
