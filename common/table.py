"""A paper's key table: each published number beside ours, how ours was obtained, and a verdict.

`published.yaml` in a paper folder lists the rows. A row's `ours` says how to measure it:
- `{metric, arm, dataset}`: a run metric, over the seeds of that arm on that data set;
- `{metric, difference: [a, b], dataset}`: per seed, metric(a) − metric(b) (an effect);
- `{metric, saving: [a, b], dataset}`: per seed, 100 · (1 − metric(a) / metric(b)) in %;
- `{model: {class_path, ...}, stat: params | macs, input_shape, scale}`: counted on the network.
`dataset: "*"` repeats the row for every data set the active profile ran.
A run's metrics are its `run.json` and `metrics.json` plus the scalar metrics of every analysis
of it: any JSON under the paper's `runs/` or `results/` keyed like run.json (paper, profile, arm,
dataset, seed), e.g. lesions evaluated on its checkpoint; `common.results.load_runs` reads them,
for the notebooks too.
A published value is a number, or `direction: higher | lower` where the paper gives only a figure.
A row on a folder data set (ImageNet) without runs says so in one line when its directory
(`data.root` of the profile that runs it) is absent: "not run: imagenet folder not found at …".
The verdict follows VERDICT_RULE, printed under every table with the paper's regime criterion
(common/regime.py): rows measured outside the regime where the claim applies are inconclusive.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from common.check import check_paper
from common.config import ConfigError, build_model, resolve
from common.datasets import DATASETS, RAW_ROOT, DataError, check_root
from common.io import atomic_write_json, atomic_write_text
from common.metrics import count_macs, count_params, summarize
from common.regime import Finding, evaluate
from common.results import Run, load_runs
from common.stats import interval, median_coverage, seeds_needed

VERDICTS = (
    "reproduced", "direction reproduced", "not reproduced", "inconclusive",
    "not run in this profile",
)  # fmt: skip
INCONCLUSIVE, NOT_RUN = VERDICTS[3], VERDICTS[4]
REPRODUCED, DIRECTION, NOT_REPRODUCED = VERDICTS[:3]
VERDICT_RULE = (
    "reproduced: the interval of our statistic lies within the row's tolerance of the published "
    "number; direction reproduced: an effect (a difference or saving over paired seeds, or a "
    "direction read off a figure) whose interval excludes zero on the paper's side; not "
    "reproduced: the interval lies outside the tolerance band, or an effect's interval lies on "
    "the wrong side of zero; inconclusive: the interval straddles (too few seeds or too much "
    "spread: the Ours column says how many seeds would decide at the measured spread), and every "
    "trained row when the regime criterion does not hold. Intervals: the 95% Student-t interval "
    "of the mean over seeds (of the paired per-seed values for an effect); for a paper's median "
    "of N, our smallest to largest of N (it covers the median with probability 1 - 2^(1-N)); for "
    "a paper's best of N, our best itself; counted rows (parameters, multiply-adds) are exact."
)


def _active(metrics: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether a finished run belongs to the active profile's arms × data sets × seeds."""
    return (
        metrics["profile"] == params.get("profile", "default") and metrics["arm"] in params["arms"]
        and metrics["dataset"] in params["datasets"] and metrics["seed"] in params["seeds"]
    )  # fmt: skip


def active_runs(paper_dir: Path, params: dict[str, Any]) -> list[Run]:
    """The paper's finished runs of the active profile's arms × data sets × seeds, with their
    analyses' scalar metrics (common.results).

    Runs left over from another profile or seed list stay on disk but out of the table.
    """
    runs = load_runs(paper_dir, finished_only=True)
    return [r for r in runs if _active(r.metrics, params)]


def _seeds(runs: list[dict], arm: str, dataset: str, metric: str) -> dict[int, float]:
    """metric per seed of an arm on a data set; a run that did not measure it is left out (e.g.
    an analysis the profile's network is too shallow for), so the row reads "not run"."""
    return {
        r["seed"]: r[metric]
        for r in runs if (r["arm"], r["dataset"]) == (arm, dataset) and metric in r
    }  # fmt: skip


def _run_values(ours: dict[str, Any], runs: list[dict], dataset: str) -> dict[int, float]:
    """Per-seed values of a run-based row on one data set."""
    metric = ours["metric"]
    if "arm" in ours:
        return _seeds(runs, ours["arm"], dataset, metric)
    kind = "difference" if "difference" in ours else "saving"
    a, b = (_seeds(runs, arm, dataset, metric) for arm in ours[kind])
    common = sorted(set(a) & set(b))
    if kind == "difference":
        return {s: a[s] - b[s] for s in common}
    return {s: 100 * (1 - a[s] / b[s]) for s in common}


def _model_stat(ours: dict[str, Any]) -> float:
    shape = ours["input_shape"]
    model = build_model(ours["model"], in_channels=shape[1], num_classes=ours["num_classes"])
    value = count_params(model) if ours["stat"] == "params" else count_macs(model, shape)
    return value * ours.get("scale", 1.0)


# How each run metric is read off a run (a row citing another metric names it as it is).
MEASURES = {
    "test_error": "test error at the {select} epoch",
    "final_test_error": "test error of the last epoch",
    "final_train_error": "training error of the last epoch (training mode)",
    "val_error": "validation error at the {select} epoch",
    "train_time_s": "training wall time (evaluation excluded)",
    "time_per_epoch_s": "training wall time per epoch (evaluation excluded)",
}


def _how(runs: list[dict], dataset: str, arms: list[str], metric: str) -> str:
    chosen = [r for r in runs if r["dataset"] == dataset and r["arm"] in arms]
    first = chosen[0]
    seeds = sorted({r["seed"] for r in chosen})
    epochs = sorted({r["epochs"] for r in chosen})
    n = first.get("threads")  # recorded since issue 18
    threads = "" if n is None else f", {n} CPU thread{'' if n == 1 else 's'}"
    select = first["select"].replace("_", " ").replace("lowest val", "lowest validation error")
    measure = MEASURES.get(metric, f"`{metric}` of each run's analysis").format(select=select)
    return (
        f"{first['profile']} profile, {dataset} ({first['train_images']} train images), "
        f"{'/'.join(map(str, epochs))} epochs, seeds {','.join(map(str, seeds))}, "
        f"{first['precision']}{threads}; {measure}"
    )


def _band(row: dict[str, Any]) -> tuple[float, float] | None:
    """The published number ± the row's tolerance; None for a direction read off a figure."""
    if "published" not in row:
        return None
    tolerance = row.get("tolerance", 0.0)
    return row["published"] - tolerance, row["published"] + tolerance


def _sign(row: dict[str, Any]) -> int:
    """The sign of the paper's effect: +1, −1, or 0 for a row that is not an effect (a value)."""
    if "published" not in row:
        return 1 if row["direction"] == "higher" else -1
    if "difference" in row["ours"] or "saving" in row["ours"]:
        return (row["published"] > 0) - (row["published"] < 0)
    return 0


def _verdict(row: dict[str, Any], summary: dict[str, Any]) -> str:
    """VERDICT_RULE on the summary's interval `ci` (None: unbounded, fewer than 2 seeds)."""
    lo, hi = _bounds(summary["ci"])
    band, sign = _band(row), _sign(row)
    if band and band[0] <= lo and hi <= band[1]:
        return REPRODUCED
    if sign and (lo > 0 if sign > 0 else hi < 0):
        return DIRECTION
    wrong_side = sign and (hi < 0 if sign > 0 else lo > 0)
    outside = band and (hi < band[0] or lo > band[1])
    return NOT_REPRODUCED if wrong_side or outside else INCONCLUSIVE


def _bounds(ci: list[float | None]) -> tuple[float, float]:
    """An interval as stored (None: unbounded on that side) as two numbers."""
    return (-math.inf if ci[0] is None else ci[0]), (math.inf if ci[1] is None else ci[1])


def _seeds_to_decide(row: dict[str, Any], summary: dict[str, Any]) -> int | None:
    """How many seeds would make an inconclusive mean's interval decide at the measured spread:
    narrower than the mean's distance to the nearest boundary it could clear (the band's edges,
    zero for an effect). None if no count does, or the spread is unknown (one seed)."""
    mean, band, sign = summary["mean"], _band(row), _sign(row)
    if summary["n"] < 2:
        return None
    margins = [abs(mean)] if sign else []
    if band:
        margins.append(max(min(mean - band[0], band[1] - mean), band[0] - mean, mean - band[1]))
    return seeds_needed(summary["std"], max(margins))


def _summary(values: list[float], statistic: str) -> dict[str, Any]:
    """mean, std, n, the paper's statistic and the interval `ci` the verdict reads."""
    lo, hi = interval(values, statistic)
    bounded = [None if math.isinf(x) else x for x in (lo, hi)]
    return {**summarize(values, statistic), "ci": bounded, "statistic": statistic}


def _published_text(row: dict[str, Any]) -> str:
    if "published" not in row:
        return f"{row['direction']} ({row['source']})"
    statistic = f", {row['statistic']}" if row.get("statistic") else ""
    return f"{row['published']:g}{row.get('unit', '')} ({row['source']}{statistic})"


def _row_datasets(ours: dict[str, Any], runs: list[dict]) -> list[str]:
    if ours.get("dataset") != "*":
        return [ours["dataset"]]
    return sorted({r["dataset"] for r in runs}) or ["*"]


def absent_folders(paper_dir: Path, params: dict[str, Any]) -> dict[str, str]:
    """For each folder data set (ImageNet) whose directory is missing: one line saying so, for
    its rows without runs. The directory is `data.root` of the active profile, else of the first
    profile that has a protocol for the data set, else the `data` stage's (data/raw/<name>)."""
    profiles, active = params.get("profiles") or {}, params.get("profile", "default")
    reasons = {}
    for dataset in (name for name, info in DATASETS.items() if info.folder):
        having = [p for p in profiles if dataset in (profiles[p] or {}).get("datasets", {})]
        for profile in sorted(having, key=lambda p: p != active)[:1]:
            config = resolve(
                {**params, "profile": profile}, paper=Path(paper_dir).name,
                arm=params["arms"][0], dataset=dataset, seed=params["seeds"][0],
            )  # fmt: skip
            where = config.data.root or RAW_ROOT / dataset
            try:
                check_root(where)
            except DataError:
                reasons[dataset] = f"not run: {dataset} folder not found at {where} ({profile})"
    return reasons


def build_rows(
    published: dict[str, Any],
    runs: list[dict],
    in_regime: bool = True,
    absent: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The table's rows, each with published, ours, how ours was obtained, and the verdict;
    trained rows are inconclusive when the runs are outside the paper's regime; rows on a folder
    data set whose directory is `absent` say so."""
    rows = []
    for row in published["rows"]:
        ours = row["ours"]
        if "stat" in ours:
            value = _model_stat(ours)
            summary = {"n": 1, "mean": value, "std": 0.0, "ci": [value, value]}
            rows.append(
                _entry(row, None, summary, "counted on the network", _verdict(row, summary))
            )
            continue
        for dataset in _row_datasets(ours, runs):
            values = _run_values(ours, runs, dataset)
            if not values:
                rows.append(_entry(row, dataset, None, (absent or {}).get(dataset, ""), NOT_RUN))
                continue
            stat = row.get("statistic") if row.get("statistic") in ("best", "median") else "mean"
            summary = _summary(list(values.values()), stat)
            arms = [ours["arm"]] if "arm" in ours else ours.get("difference", ours.get("saving"))
            how = _how(runs, dataset, arms, ours["metric"])
            verdict = _verdict(row, summary) if in_regime else INCONCLUSIVE
            if verdict == INCONCLUSIVE and in_regime and stat == "mean":
                summary["seeds_to_decide"] = _seeds_to_decide(row, summary)
            rows.append(_entry(row, dataset, summary, how, verdict))
    return rows


def _entry(row: dict, dataset: str | None, summary: dict | None, how: str, verdict: str) -> dict:
    expanded = dataset not in (None, row["ours"].get("dataset"))  # a `dataset: "*"` row
    return {
        "id": f"{row['id']}@{dataset}" if expanded else row["id"],
        "name": f"{row['name']} [{dataset}]" if expanded else row["name"],
        "published": _published_text(row), "unit": row.get("unit", ""),
        "statistic": row.get("statistic"), "ours": summary, "how": how, "verdict": verdict,
    }  # fmt: skip


def _ours_text(entry: dict[str, Any]) -> str:
    s, unit = entry["ours"], entry["unit"]
    if s is None:
        return "—"
    if entry["how"] == "counted on the network":
        return f"{s['mean']:.4g}{unit}"
    lo, hi = (f"{x:.2f}".replace("inf", "∞") for x in _bounds(s["ci"]))
    spread = f"mean {s['mean']:.2f} ± {s['std']:.2f} std"
    if s.get("statistic") == "best":
        text = f"{s['best']:.2f}{unit} (best of {s['n']}; {spread})"
    elif s.get("statistic") == "median":
        cover = f"covers the median at {median_coverage(s['n']):.0%}" if s["n"] > 1 else "1 seed"
        text = f"{s['median']:.2f}{unit} (median of {s['n']}), [{lo}, {hi}] ({cover}; {spread})"
    else:
        text = f"{s['mean']:.2f}{unit}, 95% CI [{lo}, {hi}] ({s['n']} seeds, std {s['std']:.2f})"
    if "seeds_to_decide" in s:
        needed = s["seeds_to_decide"]
        text += (f"; ~{needed} seeds would decide at this spread" if needed
                 else "; more seeds alone would not decide")  # fmt: skip
    return text


def _regime_text(regime: dict[str, Any]) -> list[str]:
    holds = "holds" if regime["holds"] else "does not hold: trained rows are inconclusive"
    lines = ["", f"Regime (stated in params.yaml before the runs): {regime['claim']} — {holds}."]
    for f in regime["findings"]:
        lines.append(f"- {f['text']}: {'yes' if f['holds'] else 'no'} ({f['observed']})")
    return lines


def to_markdown(
    title: str, rows: list[dict[str, Any]], regime: dict[str, Any] | None = None
) -> str:
    lines = [
        f"# {title}",
        "",
        "| Result | Published | Ours | How ours was obtained | Verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['published']} | {_ours_text(r)} | {r['how'] or '—'} "
            f"| {r['verdict']} |"
        )
    if regime is not None:
        lines += _regime_text(regime)
    lines += ["", f"Verdict rule: {VERDICT_RULE}"]
    return "\n".join(lines) + "\n"


def judge_regime(paper_dir: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The paper's regime criterion judged on its finished runs of the active profile."""
    if params.get("regime") is None:
        return None
    findings: list[Finding] = evaluate(params["regime"], active_runs(paper_dir, params))
    return {
        "claim": params["regime"]["claim"], "holds": all(f.holds for f in findings),
        "findings": [vars(f) for f in findings],
    }  # fmt: skip


def write_table(paper_dir: Path, out_dir: Path) -> list[dict[str, Any]]:
    """Build the key table from `published.yaml` and the finished runs; write JSON + Markdown."""
    params, published = check_paper(paper_dir)  # as the check stage did before training
    regime = judge_regime(paper_dir, params)
    in_regime = regime is None or regime["holds"]
    absent = absent_folders(paper_dir, params)
    runs = [r.metrics for r in active_runs(paper_dir, params)]
    rows = build_rows(published, runs, in_regime, absent)
    title = published["title"]
    table = {"title": title, "rows": rows, "regime": regime, "verdict_rule": VERDICT_RULE}
    atomic_write_json(Path(out_dir) / "table.json", table)
    atomic_write_text(Path(out_dir) / "table.md", to_markdown(title, rows, regime))
    atomic_write_json(Path(out_dir) / "metrics.json", verdict_counts(rows, regime))
    return rows


def verdict_counts(rows: list[dict[str, Any]], regime: dict[str, Any] | None) -> dict[str, Any]:
    """The table in numbers, DVC's metrics of the paper (`dvc metrics show` one line a paper):
    rows per verdict, and whether the regime held (null: the paper states none)."""
    counts = {verdict.replace(" ", "_"): 0 for verdict in VERDICTS}
    for row in rows:
        counts[row["verdict"].replace(" ", "_")] += 1
    return {"rows": len(rows), **counts, "regime_holds": regime and regime["holds"]}


def main(argv: list[str] | None = None) -> None:
    """`build PAPER_DIR` writes PAPER_DIR/results/table.{json,md} (`dvc repro` prints it once,
    from the root stage); `show PAPER_DIR` prints it."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("command", choices=("build", "show"))
    parser.add_argument("paper_dir", type=Path)
    args = parser.parse_args(argv)
    results = args.paper_dir / "results"
    try:
        if args.command == "build":  # the root stage `papers/<paper>` prints it, once
            rows = write_table(args.paper_dir, results)
            print(f"key table: {results / 'table.md'} ({len(rows)} rows)")
            return
        if not (results / "table.md").is_file():
            raise ConfigError(f"paper: no table in {results}; run `dvc repro {args.paper_dir}`")
        print((results / "table.md").read_text(), end="")
    except ConfigError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
