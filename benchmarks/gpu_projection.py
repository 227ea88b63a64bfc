"""GPU hours of every paper's paper profile: steps × a measured step time, on this machine.

    python3 benchmarks/gpu_projection.py --device cuda --paper-run RUN_DIR [--out-json FILE]

For each paper, the runs its paper profile trains are those of the command its `params.yaml` opens
with (`dvc exp run ... -S '...:datasets=[...]' -S '...:arms=[...]' -S '...:seeds=[...]'`; a list
the command leaves out is the file's own). Each (arm, data set) is resolved as `common.train`
resolves it (profile `paper`, the root `params.yaml`'s trainer defaults) and:

* steps = epochs × ⌈training images / batch⌉, or `schedule.max_steps` where it stops sooner
  (training images: the data set's, less `data.val_size`, or `data.train_size`; ImageNet's
  1,281,167);
* step time = the median of timed training steps (forward, backward, SGD step) of the network at
  its batch, precision (`auto`: bf16-mixed on a GPU), memory format and deterministic mode, on
  random inputs of the data set's shape held on the device: the bare loop of
  `benchmarks/throughput.py`, data and framework left out. A batch that does not fit in memory is
  timed at half the size (again if need be) and scaled up linearly;
* framework and evaluation overhead = the paper-protocol run's (`--paper-run`, a finished
  `common.train` run with `EpochWall`: ResNet-20 on the whole Fashion-MNIST training set) seconds
  per epoch over its own steps × its bare step time. Every profile is assumed to pay ResNet-20's
  overhead, its evaluation share included (it evaluates 10,000 test images per 60,000 trained).

GPU hours of a run = steps × step time × overhead; of a paper, the sum over arms × data sets ×
seeds, one run at a time on one GPU of this kind. `--budget-s` bounds the measuring: networks left
when it is spent (counted from the start) are listed as not measured. Importable: `main([...])`.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.callbacks import Callback

from benchmarks.throughput import DEVICES, Stamps, deterministic
from common.config import ConfigError, RunConfig, build_model, load_params, resolve
from common.datasets import DATASETS
from common.training import resolve_precision

REPO = Path(__file__).resolve().parents[1]
IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012's training set (a folder set: not in DATASETS)
MATRIX = ("datasets", "arms", "seeds")  # what a paper profile's command sets with -S
EPOCH_WALL = "epoch_wall_s.json"
ASSUMPTIONS = """\
Assumptions: the runs of each params.yaml's opening `dvc exp run` command (its other variants
left out), one at a time on one GPU, no DDP; steps = epochs × ⌈training images / batch⌉ (or
max_steps); a step's time is that of the bare loop (forward, backward, SGD) on random inputs
held on the GPU, at initialisation (an adaptive ODE solver's later steps may cost more), times
the overhead of the paper-protocol ResNet-20 run (the framework, the per-epoch evaluation and
checkpoint); ImageNet's JPEG decoding (data.workers processes) assumed to keep up.\
"""


class EpochWall(Callback):
    """Wall seconds of each epoch, evaluation and checkpointing included, written to the run's
    `epoch_wall_s.json` when training ends (a callback the paper-protocol run names)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the GPU's queued work belongs to the epoch it came from
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.starts.append(self._now())

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        marks = [*self.starts, self._now()]
        walls = [b - a for a, b in itertools.pairwise(marks)]
        if trainer.is_global_zero:
            (Path(trainer.default_root_dir) / EPOCH_WALL).write_text(json.dumps(walls) + "\n")


# ---------------------------------------------------------------- what the profiles train


def paper_command(params_file: Path) -> dict[str, list[Any]]:
    """The lists (datasets, arms, seeds) that the first `dvc exp run` command of the file's opening
    comment sets; those it does not set are the file's own."""
    header = list(itertools.takewhile(lambda ln: ln.startswith("#"),
                                      params_file.read_text().splitlines()))  # fmt: skip
    header = [ln.lstrip("#").strip() for ln in header]
    start = next((i for i, ln in enumerate(header) if ln.startswith("dvc exp run")), None)
    if start is None:
        raise ConfigError(f"params: {params_file} opens with no `dvc exp run` paper command")
    # The command and its continuation lines (each starting with -S).
    command = [header[start], *itertools.takewhile(lambda ln: ln.startswith("-S"),
                                                   header[start + 1 :])]  # fmt: skip
    params, found = load_params(params_file), {}
    for token in shlex.split(" ".join(command)):
        key, _, value = token.partition(".yaml:")[2].partition("=")
        if key in MATRIX:
            found[key] = yaml.safe_load(value)  # a list in YAML's flow style, as DVC reads it
    return {key: found.get(key, params.get(key)) for key in MATRIX}


def paper_config(paper_dir: Path, arm: str, dataset: str, seed: int) -> RunConfig:
    """The run's configuration as `common.train` resolves it under the paper profile."""
    params = {**load_params(paper_dir / "params.yaml"), "profile": "paper"}
    params.update(datasets=[dataset], arms=[arm], seeds=[seed])
    shared = load_params(REPO / "params.yaml")
    return resolve(
        params, paper=paper_dir.name, arm=arm, dataset=dataset, seed=seed,
        shared={"trainer": shared.get("trainer", {}), "wandb": {"mode": "disabled"}},
    )  # fmt: skip


def train_images(config: RunConfig) -> int:
    """Images one epoch trains on: the data set's, less the validation split, or the subset."""
    total = DATASETS[config.dataset].train_images or IMAGENET_TRAIN_IMAGES
    return config.data.train_size or total - config.data.val_size


def steps(config: RunConfig) -> int:
    """Optimizer steps of one run: epochs × ⌈images / batch⌉, or max_steps where it stops sooner."""
    per_epoch = math.ceil(train_images(config) / config.optim.batch_size)
    total = config.schedule.epochs * per_epoch
    return total if config.schedule.max_steps < 0 else min(total, config.schedule.max_steps)


def input_shape(dataset: str) -> tuple[int, int, int]:
    return DATASETS[dataset].shape


# ---------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timed:
    seconds: float  # one step at the configuration's batch
    batch: int  # the batch actually timed (smaller where the full one did not fit)


def step_time(config: RunConfig, device: str, warmup: int, timed: int, max_batch: int) -> Timed:
    """Median time of a training step of the run's network at its batch (see the module doc):
    halving the batch until it fits (or `max_batch`), then scaling linearly."""
    batch = min(config.optim.batch_size, max_batch)
    while True:
        try:
            seconds = _bare_steps(config, device, batch, warmup, timed)
            return Timed(seconds * config.optim.batch_size / batch, batch)
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()


def _bare_steps(config: RunConfig, device: str, batch: int, warmup: int, timed: int) -> float:
    c, h, w = input_shape(config.dataset)
    classes = DATASETS[config.dataset].num_classes
    memory = torch.channels_last if config.trainer.channels_last else torch.contiguous_format
    torch.manual_seed(config.seed)
    model = build_model(config.model, c, classes).to(device, memory_format=memory).train()
    o = config.optim
    optimizer = torch.optim.SGD(
        model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
        weight_decay=o.weight_decay,
    )  # fmt: skip
    x = torch.randn(batch, c, h, w, device=device).contiguous(memory_format=memory)
    y = torch.randint(0, classes, (batch,), device=device)
    bf16 = resolve_precision(config.trainer.precision, device) == "bf16-mixed"
    stamps = Stamps(device)
    with deterministic(device):
        for _ in range(warmup + timed):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            stamps.stamp()
    return statistics.median(stamps.step_times(warmup))


# ---------------------------------------------------------------- the paper-protocol run


def paper_run_table(run_dir: Path) -> str:
    """The paper-protocol run, epoch by epoch: seconds training and with evaluation, images/s."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    with open(run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    walls = json.loads((run_dir / EPOCH_WALL).read_text())
    n = metrics["train_images"]
    lines = [
        f"{run['paper']}/{run['arm']} on {run['dataset']}: {n:,} training images, "
        f"{metrics['params']:,} parameters, {metrics['macs'] / 1e6:.1f} M multiply-adds per "
        f"image, {run['precision']} on {run['device']}",
        "",
        "| epoch | training s | with evaluation s | training images/s | test error % |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row, wall in zip(rows, walls, strict=True):
        train = float(row["train_time_s"])
        lines.append(f"| {row['epoch']} | {train:.2f} | {wall:.2f} | {n / train:,.0f} | "
                     f"{float(row['test_error']):.2f} |")  # fmt: skip
    return "\n".join(lines)


def overhead(run_dir: Path, device: str, warmup: int, timed: int) -> dict[str, float]:
    """The paper-protocol run's seconds per epoch (training alone, and with evaluation and
    checkpoint) over its steps per epoch × its bare step time: what `common.train` adds."""
    saved = json.loads((run_dir / "config.json").read_text())
    config = RunConfig.from_dict(saved)
    with open(run_dir / "history.csv", newline="") as f:
        train_s = [float(row["train_time_s"]) for row in csv.DictReader(f)]
    walls = json.loads((run_dir / EPOCH_WALL).read_text())
    # The first epoch pays CUDA's start-up and the kernels' first loading: left out if not alone.
    train_s, walls = (train_s[1:], walls[1:]) if len(walls) > 1 else (train_s, walls)
    bare = step_time(config, device, warmup, timed, config.optim.batch_size).seconds
    per_epoch = math.ceil(train_images(config) / config.optim.batch_size)
    train, wall = statistics.median(train_s), statistics.median(walls)
    return {
        "train_s_per_epoch": train, "wall_s_per_epoch": wall, "steps_per_epoch": per_epoch,
        "bare_step_s": bare, "train_overhead": train / (per_epoch * bare),
        "overhead": wall / (per_epoch * bare),
    }  # fmt: skip


# ---------------------------------------------------------------- projection


def paper_dirs(names: list[str] | None) -> list[Path]:
    dirs = sorted(p.parent for p in (REPO / "papers").glob("*/params.yaml"))
    if names:
        unknown = sorted(set(names) - {d.name for d in dirs})
        if unknown:
            known = ", ".join(d.name for d in dirs)
            raise ConfigError(f"--papers: {', '.join(unknown)} not among {known}")
        dirs = [d for d in dirs if d.name in names]
    return dirs


def plan(dirs: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """One entry per (paper, arm, data set) of the paper profiles' commands, with its steps and
    seeds; and a line for each that could not be resolved."""
    entries, problems = [], []
    for paper_dir in dirs:
        try:
            matrix = paper_command(paper_dir / "params.yaml")
        except ConfigError as err:
            problems.append(f"{paper_dir.name}: {err}")
            continue
        for dataset in matrix["datasets"]:
            for arm in matrix["arms"]:
                try:
                    config = paper_config(paper_dir, arm, dataset, matrix["seeds"][0])
                except ConfigError as err:
                    reason = str(err) if len(str(err)) < 160 else f"{str(err)[:157]}..."
                    problems.append(f"{paper_dir.name}: {arm} on {dataset}: {reason}")
                    continue
                entries.append({
                    "paper": paper_dir.name, "arm": arm, "dataset": dataset, "config": config,
                    "seeds": len(matrix["seeds"]), "batch": config.optim.batch_size,
                    "steps": steps(config),
                })  # fmt: skip
    return entries, problems


def _key(config: RunConfig) -> str:
    """What a step's time depends on: the network, its input, batch, precision and format."""
    parts = (config.model, config.dataset, config.optim.batch_size, config.trainer.precision,
             config.trainer.channels_last)  # fmt: skip
    return json.dumps(parts, sort_keys=True, default=str)


def measure(entries: list[dict[str, Any]], args: argparse.Namespace, deadline: float) -> None:
    """Each entry's `step_s` (None once `time.monotonic()` passed `deadline`), the cheapest
    inputs first."""
    times: dict[str, Timed] = {}
    order = sorted(entries, key=lambda e: math.prod(input_shape(e["dataset"])))
    for entry in order:
        key = _key(entry["config"])
        if key not in times and time.monotonic() < deadline:
            times[key] = step_time(
                entry["config"], args.device, args.warmup, args.steps, args.max_batch
            )
            print(f"  {entry['paper']}/{entry['arm']} on {entry['dataset']}: "
                  f"{times[key].seconds * 1e3:.1f} ms/step", flush=True)  # fmt: skip
        timed = times.get(key)
        entry["step_s"] = timed.seconds if timed else None
        entry["timed_batch"] = timed.batch if timed else None


def hours(entry: dict[str, Any], factor: float) -> float | None:
    """GPU hours of all the entry's seeds, or None if it was not measured."""
    if entry["step_s"] is None:
        return None
    return entry["steps"] * entry["step_s"] * factor * entry["seeds"] / 3600


def _h(value: float | None) -> str:
    return "not measured" if value is None else f"{value:,.1f}"


def tables(entries: list[dict[str, Any]], factor: float) -> str:
    """Markdown: each paper's total, then each (arm, data set)."""
    lines = ["| paper | runs (arms × data sets × seeds) | GPU hours (bare) | GPU hours |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for paper in sorted({e["paper"] for e in entries}):
        mine = [e for e in entries if e["paper"] == paper]
        runs = sum(e["seeds"] for e in mine)
        bare = [hours(e, 1.0) for e in mine]
        known = [h for h in bare if h is not None]
        missing = "" if len(known) == len(bare) else f" (+{len(bare) - len(known)} not measured)"
        total = sum(known) if known else None
        scaled = None if total is None else total * factor
        lines.append(f"| {paper} | {runs} | {_h(total)}{missing} | {_h(scaled)}{missing} |")
    lines += ["", "| paper | arm | data set | batch | steps per run | ms per step (bare) | seeds "
              "| GPU hours |", "|---|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for e in entries:
        ms = "not measured" if e["step_s"] is None else f"{e['step_s'] * 1e3:.1f}"
        if e["timed_batch"] not in (None, e["batch"]):
            ms += f" (timed at {e['timed_batch']}, scaled)"
        cells = (e["paper"], e["arm"], e["dataset"], str(e["batch"]), f"{e['steps']:,}", ms,
                 str(e["seeds"]), _h(hours(e, factor)))  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help=f"one of {', '.join(DEVICES)}")
    p.add_argument("--paper-run", type=Path, help="a finished run with EpochWall (overhead)")
    p.add_argument("--papers", help="comma-separated paper folders (default: every paper)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per network")
    p.add_argument("--steps", type=int, default=5, help="timed steps per network")
    p.add_argument("--max-batch", type=int, default=1 << 30, help="time at most this batch")
    p.add_argument("--budget-s", type=float, default=150.0,
                   help="start measuring no network after this many seconds")  # fmt: skip
    p.add_argument("--out-json", type=Path, help="write the projection here too")
    a = p.parse_args(argv)
    if a.device not in DEVICES:
        p.error(f"--device: {a.device!r} is not one of {', '.join(DEVICES)}")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device: cuda, but torch sees no CUDA GPU here")
    if min(a.warmup, a.steps, a.max_batch) < 1:
        p.error("--warmup, --steps and --max-batch must be ≥ 1")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    deadline = time.monotonic() + args.budget_s  # from the start: planning takes its share
    try:
        entries, problems = plan(paper_dirs(args.papers.split(",") if args.papers else None))
    except ConfigError as err:
        sys.exit(f"error: {err}")
    factor = {"overhead": 1.0}
    if args.paper_run is not None:
        print(paper_run_table(args.paper_run) + "\n", flush=True)
        factor = overhead(args.paper_run, args.device, args.warmup, args.steps)
        print(
            f"paper-protocol run ({args.paper_run}): {factor['train_s_per_epoch']:.2f} s/epoch "
            f"training, {factor['wall_s_per_epoch']:.2f} s/epoch with evaluation; "
            f"{factor['steps_per_epoch']} steps × bare {factor['bare_step_s'] * 1e3:.2f} ms: "
            f"overhead × {factor['train_overhead']:.2f} training, × {factor['overhead']:.2f} in all"
        )
    measure(entries, args, deadline)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (dry run)"
    print(f"\nProjected GPU hours on one {device}, one run at a time; steps × bare step time × "
          f"overhead {factor['overhead']:.2f}:\n")  # fmt: skip
    print(tables(entries, factor["overhead"]))
    print("\n" + ASSUMPTIONS)
    for line in problems:
        print(f"not projected: {line}")
    if args.out_json:
        rows = [{k: v for k, v in e.items() if k != "config"} | {"gpu_hours": hours(
            e, factor["overhead"])} for e in entries]  # fmt: skip
        record = {"device": device, "overhead": factor, "runs": rows, "not_projected": problems}
        args.out_json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
