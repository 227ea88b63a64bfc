"""Training throughput of a CIFAR ResNet on 32x32 images: our Lightning path against references.

    .venv/bin/python benchmarks/throughput.py [--batch 128] [--steps 30] [--warmup 5]
    python3 benchmarks/throughput.py --device cuda --depth 110 --batch 512 --no-peer   # a GPU

Pipelines, all on synthetic uint8 images held in memory (nothing is downloaded):

* ours: a real `ImageDataModule` over a prepared file, `Classifier` and `lightning.Trainer`, at
  the project's precision (`resolve_precision("auto", device)`), channels_last and deterministic
  mode (`deterministic_mode(device)`: on a GPU, deterministic kernels, as `fit` runs them);
* bare: a plain PyTorch loop doing the same work (same augmentation, precision, memory format,
  deterministic mode; on a GPU the uint8 batch is copied over and augmented there, as ours);
* peer: the usual torchvision pipeline, a CIFAR-10 folder read by `torchvision.datasets.CIFAR10`
  with per-image PIL transforms and two DataLoader workers, in fp32;
* pipeline: our loader and on-device augmentation alone, without the model;
* tight: forward + backward of one fixed in-memory batch, over and over (no data, no optimizer):
  the practical limit of this device for the model. Ours is also given as multiply-adds per second
  (3 × the forward's per image: forward, and backward at twice its cost) and as a fraction of
  tight's; on a GPU also as a fraction of the chip's bf16 rate, measured here by a large matrix
  product (`--device cuda`).

Every run times whole iterations (data, augmentation, forward, backward, optimizer step), each
from the end of the step before, after `--warmup` untimed steps; its images/s is batch / median
step time. On a GPU a step ends when the GPU has done its work, read from CUDA events recorded in
its stream (the host only queues the work). ours and bare alternate for `--rounds` rounds and
ours/bare is the median of the rounds' paired ratios. The machine's load average is printed: on 2
cores, other jobs dominate.
Importable: `main(["--steps", "2", "--warmup", "1", "--images", "512", "--rounds", "1"])`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import logging
import os
import pickle
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import CIFAR10

from common.config import DataConfig, OptimConfig, ScheduleConfig
from common.data import ImageDataModule, random_crop, random_flip, save_prepared
from common.metrics import count_macs
from common.training import Classifier, deterministic_mode, resolve_precision
from papers.resnet.model import CifarResNet

NUM_CLASSES = 10
DEVICES = ("cpu", "cuda")
MATMUL_SIZE = 8192  # the square bf16 matrix product that measures a GPU's practical peak
PIPELINE_STEP_FACTOR = 10  # the model-free pipeline is fast: time more batches for a stable figure
TARGETS = {"ours/bare": 0.95, "ours/peer": 1.5, "pipeline/ours": 10.0}


@dataclass(frozen=True)
class Settings:
    batch: int = 128
    steps: int = 30
    warmup: int = 5
    images: int = 50_000
    peer_workers: int = 2
    rounds: int = 5  # ours and bare alternate this many times; ours/bare = median paired ratio
    fp32: bool = True  # also time the bare loop in fp32, to show what bf16 buys
    seed: int = 0
    device: str = "cpu"  # cpu, or cuda (a GPU)
    depth: int = 20  # CIFAR ResNet-(6n+2)
    peer: bool = True  # also time the torchvision peer pipeline


@dataclass(frozen=True)
class Row:
    pipeline: str
    precision: str
    images_per_s: float
    ratio: str = ""
    target: str = ""
    met: str = ""


# ---------------------------------------------------------------- timing


def step_times(stamps: list[float], warmup: int) -> list[float]:
    """Durations of the steps after warm-up; `stamps[i]` is when step i finished.

    Each duration runs from one step's end to the next's, so data loading is inside it.
    """
    timed = stamps[warmup - 1 :]
    return [b - a for a, b in itertools.pairwise(timed)]


class Stamps:
    """When each step finished. On a CPU the host's clock; on a GPU a CUDA event recorded in the
    stream after the step's work, as the host only queues that work (its clock would time the
    queueing, and the queue's filling up)."""

    def __init__(self, device: str) -> None:
        self.cuda, self.marks = device == "cuda", []

    def stamp(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def step_times(self, warmup: int) -> list[float]:
        """Durations of the steps after warm-up (waits for the GPU to finish first)."""
        if not self.cuda:
            return step_times(self.marks, warmup)
        torch.cuda.synchronize()
        timed = self.marks[warmup - 1 :]
        return [a.elapsed_time(b) / 1000 for a, b in itertools.pairwise(timed)]


def images_per_s(times: list[float], batch: int, robust: bool = True) -> float:
    """batch / median step time, or batch / mean step time when not `robust`.

    The median is the default because other jobs on a small machine stall some steps at random;
    a cost paid on every step (framework overhead) still shows in the median.
    """
    return batch / (statistics.median(times) if robust else statistics.fmean(times))


class StepClock(Callback):
    """Records when each training step (optimizer step included) has finished."""

    def __init__(self, device: str) -> None:
        self.stamps = Stamps(device)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self.stamps.stamp()


def endless(loader: DataLoader) -> Iterator[Any]:
    """Batches across epoch boundaries, so a small data set can feed any number of steps."""
    while True:
        yield from loader


# ---------------------------------------------------------------- data on disk


def synthetic_images(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """n random uint8 NCHW 32x32 RGB images and int64 labels (throughput ignores content)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, NUM_CLASSES, (n,), generator=g)


def write_prepared(path: Path, images: Tensor, labels: Tensor) -> None:
    """A file in the format `common.data.prepare` writes; a tenth of the images serve as test."""
    n_test = max(1, len(labels) // 10)
    data = {
        "name": "cifar10", "num_classes": NUM_CLASSES,
        "train_images": images, "train_labels": labels,
        "test_images": images[:n_test].clone(), "test_labels": labels[:n_test].clone(),
    }  # fmt: skip
    save_prepared(data, path)


def data_config(n: int) -> DataConfig:
    """The default (ResNet) data protocol, with a validation split that fits a tiny test set."""
    return DataConfig(val_size=max(1, min(5000, n // 10)))


def write_cifar_folder(root: Path, images: Tensor, labels: Tensor) -> dict[str, str]:
    """`root/cifar-10-batches-py` as the CIFAR-10 python release lays it out; returns file MD5s."""
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    flat = images.reshape(len(images), -1).numpy()  # the release stores rows of R, G, B planes
    chunks = np.array_split(np.arange(len(labels)), len(CIFAR10.train_list))
    entries = {
        name: {"data": flat[idx], "labels": labels[idx].tolist()}
        for (name, _), idx in zip(CIFAR10.train_list, chunks, strict=True)
    }
    entries["test_batch"] = {"data": flat[:1], "labels": labels[:1].tolist()}
    entries["batches.meta"] = {"label_names": [f"class{i}" for i in range(NUM_CLASSES)]}
    for name, entry in entries.items():
        (folder / name).write_bytes(pickle.dumps(entry))
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in entries}


class FolderCIFAR10(CIFAR10):
    """torchvision's CIFAR10, checking our synthetic files' MD5s instead of the release's.

    The integrity check still runs (on instance attributes that shadow the class's lists), so the
    data takes exactly the path a downloaded CIFAR-10 would.
    """

    def __init__(self, root: Path, md5: dict[str, str], **kwargs: Any) -> None:
        self.train_list = [[name, md5[name]] for name, _ in CIFAR10.train_list]
        self.test_list = [["test_batch", md5["test_batch"]]]
        self.meta = {**CIFAR10.meta, "md5": md5["batches.meta"]}
        super().__init__(root, **kwargs)


# ---------------------------------------------------------------- pipelines


def network(s: Settings) -> nn.Module:
    torch.manual_seed(s.seed)  # every pipeline starts from the same weights
    return CifarResNet(depth=s.depth)


@contextlib.contextmanager
def deterministic(device: str) -> Iterator[None]:
    """The deterministic mode `fit` trains under on `device` (`deterministic_mode`: on a GPU,
    deterministic kernels and no cuDNN autotuning), for the loops that have no Lightning to set it;
    process-wide settings, restored after."""
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    mode = deterministic_mode(device)
    if mode:  # as Lightning's Trainer sets it
        torch.use_deterministic_algorithms(True, warn_only=mode == "warn")
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=warn_only)
        torch.backends.cudnn.benchmark = before[1]


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    o = OptimConfig()
    return torch.optim.SGD(
        model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    )


def quiet_lightning() -> None:
    """Silence Lightning's banners, its advice to add workers (no workers is the design) and a
    deprecation inside Lightning itself; none of them is about what is measured."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def run_ours(prepared: Path, s: Settings, precision: str) -> list[float]:
    """The project's path: ImageDataModule + Classifier under a Trainer configured as `fit` is."""
    quiet_lightning()
    data = ImageDataModule(prepared, data_config(s.images), s.batch)
    module = Classifier(network(s), OptimConfig(batch_size=s.batch), ScheduleConfig(), True)
    clock = StepClock(s.device)
    # Deterministic mode as `fit` chooses it for this accelerator: part of what a real run pays.
    # `deterministic` is process-wide: `deterministic(...)` restores it for the runs after this.
    with tempfile.TemporaryDirectory() as root, deterministic(s.device):
        trainer = L.Trainer(
            accelerator=s.device, devices=1, precision=precision, max_steps=s.warmup + s.steps,
            limit_val_batches=0, num_sanity_val_steps=0,
            deterministic=deterministic_mode(s.device),
            callbacks=[clock], logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
        )  # fmt: skip
        trainer.fit(module, data)
    return clock.stamps.step_times(s.warmup)


def augment(images: Tensor, mean: Tensor, std: Tensor, config: DataConfig) -> Tensor:
    """What `ImageDataModule.on_after_batch_transfer` does to a training batch, written out."""
    images = random_crop(images, config.pad, config.padding_mode)
    if config.flip:
        images = random_flip(images)
    return (images.float() / 255 - mean) / std


def run_bare(images: Tensor, labels: Tensor, s: Settings, precision: str) -> list[float]:
    """A plain loop over index-sliced in-memory batches, same augmentation and precision as ours:
    each uint8 batch is copied to the device (asynchronously) and augmented there."""
    device, config = torch.device(s.device), data_config(len(labels))
    mean = images.float().div(255).mean(0).to(device)  # per-pixel mean, as ours
    std = torch.ones((), device=device)
    model = network(s).to(device, memory_format=torch.channels_last).train()
    optimizer = sgd(model)
    bf16 = precision == "bf16-mixed"
    stamps = Stamps(s.device)
    order = torch.randperm(len(labels))
    starts = endless(range(0, len(labels) - s.batch + 1, s.batch))
    with deterministic(s.device):
        for _ in range(s.warmup + s.steps):
            idx = order[(start := next(starts)) : start + s.batch]
            x, y = (t.to(device, non_blocking=True) for t in (images[idx], labels[idx]))
            x = augment(x, mean, std, config).contiguous(memory_format=torch.channels_last)
            with torch.autocast(s.device, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            stamps.stamp()
    return stamps.step_times(s.warmup)


def run_tight(s: Settings, precision: str) -> list[float]:
    """Forward + backward of one fixed batch in a tight loop: no data, no optimizer step."""
    device = torch.device(s.device)
    model = network(s).to(device, memory_format=torch.channels_last).train()
    x = torch.randn(s.batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (s.batch,), device=device)
    bf16 = precision == "bf16-mixed"
    stamps = Stamps(s.device)
    with deterministic(s.device):
        for _ in range(s.warmup + s.steps):
            with torch.autocast(s.device, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x), y)
            loss.backward()  # gradients accumulate in place: the cheapest backward there is
            stamps.stamp()
    return stamps.step_times(s.warmup)


def matmul_flops_per_s(size: int = MATMUL_SIZE, repeats: int = 10) -> float:
    """A GPU's practical bf16 peak: flop/s of a square bf16 matrix product (3 warm-ups first)."""
    a, b = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (start.elapsed_time(end) / 1000)


def peer_transform() -> Callable[[Any], Tensor]:
    """The usual CIFAR-10 recipe: per-image PIL flip and padded crop, then tensor + normalise."""
    return transforms.Compose([
        transforms.RandomHorizontalFlip(),
        transforms.RandomCrop(32, padding=4),
        transforms.ToTensor(),
        transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ])  # fmt: skip


def run_peer(root: Path, md5: dict[str, str], s: Settings) -> list[float]:
    """torchvision CIFAR10 + PIL transforms + worker processes, fp32, contiguous NCHW."""
    dataset = FolderCIFAR10(root, md5, train=True, transform=peer_transform())
    loader = DataLoader(dataset, batch_size=s.batch, shuffle=True, num_workers=s.peer_workers)
    device = torch.device(s.device)
    model = network(s).to(device).train()
    optimizer = sgd(model)
    stamps = Stamps(s.device)
    batches = endless(loader)
    for _ in range(s.warmup + s.steps):
        x, y = (t.to(device) for t in next(batches))
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        stamps.stamp()
    del batches  # shuts the workers down before the next measurement
    return stamps.step_times(s.warmup)


def run_pipeline(prepared: Path, s: Settings) -> list[float]:
    """Our loader and the DataModule's own augmentation hook, with no model behind them; on a
    GPU each batch is copied there first, as Lightning does (asynchronously)."""
    data = ImageDataModule(prepared, data_config(s.images), s.batch)
    data.setup("fit")
    # The hook augments only while a trainer is training; a stand-in says so without a Trainer.
    data.trainer = SimpleNamespace(training=True)
    stamps, device = Stamps(s.device), torch.device(s.device)
    batches = endless(data.train_dataloader())
    for i in range(s.warmup + s.steps * PIPELINE_STEP_FACTOR):
        batch = tuple(t.to(device, non_blocking=True) for t in next(batches))
        images, _ = data.on_after_batch_transfer(batch, i)
        stamps.stamp()
    assert images.dtype == torch.float32  # the augmentation did run to the end
    return stamps.step_times(s.warmup)


# ---------------------------------------------------------------- report


def machine(device: str = "cpu") -> str:
    """CPU model, cores, the GPU (if used), torch version and load average (other jobs skew a
    2-core machine)."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    gpu = f"GPU: {torch.cuda.get_device_name()}; " if device == "cuda" else ""
    return (
        f"{gpu}CPU: {cpu}; cores: {os.cpu_count()}; torch threads: {torch.get_num_threads()}; "
        f"torch {torch.__version__}; lightning {L.__version__}; load average (1/5/15 min): {load}"
    )


def compared(name: str, value: float) -> tuple[str, str, str]:
    """(ratio, target, met?) cells for a ratio with a target in TARGETS."""
    target = TARGETS[name]
    return f"{name} = {value:.2f}", f"≥ {target:g}", "yes" if value >= target else "**no**"


def rows(speeds: dict[str, list[float]], precision: str, s: Settings = Settings()) -> list[Row]:
    """The table: each pipeline's median images/s over its runs, and the ratio it is judged by.

    ours/bare is the median of the rounds' paired ratios: a round's two runs share the machine's
    load at the time, which varies by ±15% between rounds on a busy 2-core box.
    """
    r = {name: statistics.median(v) for name, v in speeds.items()}
    ours, bare = r["ours"], r["bare"]
    paired = statistics.median(o / b for o, b in zip(speeds["ours"], speeds["bare"], strict=True))
    table = [
        Row("ours (Lightning + ImageDataModule)", precision, ours,
            *compared("ours/bare", paired)),
        Row("bare PyTorch loop", precision, bare, "reference"),
    ]  # fmt: skip
    if "bare_fp32" in r:
        table.append(Row("bare PyTorch loop", "32-true", r["bare_fp32"],
                         f"bf16/fp32 = {bare / r['bare_fp32']:.2f}", "info"))  # fmt: skip
    if "peer" in r:
        table.append(Row("peer (torchvision CIFAR10 + PIL, 2 workers)", "32-true", r["peer"],
                         *compared("ours/peer", ours / r["peer"])))  # fmt: skip
    table.append(Row("data pipeline alone (no model)", "uint8 → fp32", r["pipeline"],
                     *compared("pipeline/ours", r["pipeline"] / ours)))  # fmt: skip
    train_macs = 3 * count_macs(network(s), (1, 3, 32, 32))  # per image: forward + backward
    table.append(Row("tight forward+backward loop (the limit)", precision, r["tight"],
                     f"ours: {ours * train_macs / 1e9:.1f} of {r['tight'] * train_macs / 1e9:.1f} "
                     f"G multiply-adds/s = {ours / r['tight']:.2f}", "info"))  # fmt: skip
    if "matmul" in r:  # flop/s of a bf16 matrix product: the chip's practical peak
        peak_macs = r["matmul"] / 2
        table.append(Row(f"bf16 {MATMUL_SIZE}² matrix product (the chip's rate)", "bf16",
                         peak_macs / train_macs,
                         f"ours: {ours * train_macs / 1e12:.2f} of {peak_macs / 1e12:.0f} "
                         f"T multiply-adds/s = {ours * train_macs / peak_macs:.3f}",
                         "info"))  # fmt: skip
    return table


def markdown(table: list[Row]) -> str:
    lines = ["| pipeline | precision | images/s | ratio | target | met? |"]
    lines.append("|---|---|---:|---|---|---|")
    for row in table:
        images = f"{row.images_per_s:,.0f}"
        cells = (row.pipeline, row.precision, images, row.ratio, row.target, row.met)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def schedule(s: Settings, work: Path, precision: str) -> list[tuple[str, Callable[[], list]]]:
    """(name, run) in the order to run them; ours and bare alternate for `s.rounds` rounds.

    Alternating, and flipping who goes first each round, puts the two sides of the tightest
    ratio under the same background load and the same process history (heap, caches).
    """
    images, labels = synthetic_images(s.images, s.seed)
    write_prepared(work / "prepared.pt", images, labels)
    pair = [
        ("ours", lambda: run_ours(work / "prepared.pt", s, precision)),
        ("bare", lambda: run_bare(images, labels, s, precision)),
    ]
    runs = [run for r in range(s.rounds) for run in (pair if r % 2 == 0 else pair[::-1])]
    if s.fp32 and precision != "32-true":
        runs.append(("bare_fp32", lambda: run_bare(images, labels, s, "32-true")))
    if s.peer:
        md5 = write_cifar_folder(work / "cifar", images, labels)
        runs.append(("peer", lambda: run_peer(work / "cifar", md5, s)))
    runs.append(("pipeline", lambda: run_pipeline(work / "prepared.pt", s)))
    runs.append(("tight", lambda: run_tight(s, precision)))
    return runs


def measure(s: Settings, precision: str, work: Path, log: Callable[[str], None]) -> dict:
    """Images/s (batch / median step time) of every run, listed by pipeline in run order."""
    speeds: dict[str, list[float]] = {}
    if s.device == "cuda":  # the chip's practical bf16 peak, for `rows`' physical limit
        speeds["matmul"] = [matmul_flops_per_s()]
        log(f"bf16 {MATMUL_SIZE}² matrix product: {speeds['matmul'][0] / 1e12:.0f} TFLOP/s")
    for name, run in schedule(s, work, precision):
        start = time.perf_counter()
        times = run()
        speeds.setdefault(name, []).append(images_per_s(times, s.batch))
        log(
            f"{name}: {speeds[name][-1]:,.0f} images/s by median step, "
            f"{images_per_s(times, s.batch, robust=False):,.0f} by mean "
            f"({time.perf_counter() - start:.0f} s, load {os.getloadavg()[0]:.2f})"
        )
    return speeds


def parse(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=Settings.batch)
    p.add_argument("--steps", type=int, default=Settings.steps, help="timed steps per pipeline")
    p.add_argument("--warmup", type=int, default=Settings.warmup, help="untimed steps first")
    p.add_argument("--images", type=int, default=Settings.images, help="synthetic images held")
    p.add_argument("--peer-workers", type=int, default=Settings.peer_workers)
    p.add_argument("--rounds", type=int, default=Settings.rounds, help="alternations of ours/bare")
    p.add_argument("--no-fp32", action="store_true", help="skip the fp32 bare loop")
    p.add_argument("--no-peer", action="store_true", help="skip the torchvision peer pipeline")
    p.add_argument("--device", default=Settings.device, help=f"one of {', '.join(DEVICES)}")
    p.add_argument("--depth", type=int, default=Settings.depth, help="CIFAR ResNet depth, 6n+2")
    a = p.parse_args(argv)
    if min(a.steps, a.warmup, a.rounds) < 1:
        p.error("--steps, --warmup, --rounds must be ≥ 1 (timing starts at a warm-up step's end)")
    if a.images < 2 * a.batch:
        p.error(f"--images must be at least 2 x --batch ({2 * a.batch}) to fit a validation split")
    if a.device not in DEVICES:
        p.error(f"--device: {a.device!r} is not one of {', '.join(DEVICES)}")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device: cuda, but torch sees no CUDA GPU here")
    if a.depth < 8 or (a.depth - 2) % 6:
        p.error(f"--depth: {a.depth} is not a CIFAR ResNet depth 6n+2 (20, 32, 56, 110, ...)")
    return Settings(
        a.batch, a.steps, a.warmup, a.images, a.peer_workers, a.rounds, not a.no_fp32,
        device=a.device, depth=a.depth, peer=not a.no_peer,
    )  # fmt: skip


def _progress(message: str) -> None:
    print(f"  {message}", flush=True)  # flushed: a slow run shows where it is


def main(argv: list[str] | None = None) -> int:
    """Print a Markdown table of images/s; exit 0 whether or not the targets are met."""
    s = parse(argv)
    precision = resolve_precision("auto", s.device)
    before = machine(s.device)
    print(
        f"ResNet-{s.depth} on {s.device}, batch {s.batch}, {s.warmup} warm-up + {s.steps} timed "
        f"steps per run, ours/bare alternated {s.rounds}x; images/s = batch / median step time, "
        "median of runs",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="throughput-") as work:
        speeds = measure(s, precision, Path(work), _progress)
    print(f"\nbefore: {before}\nafter:  {machine(s.device)}\n")
    print(markdown(rows(speeds, precision, s)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
