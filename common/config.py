"""One training run's configuration, resolved from a paper's `params.yaml`, validated at the edge.

A paper's params file holds `profiles` (default = laptop CPU, paper = the paper's protocol), each
with per-dataset overrides, and `networks` (the arms its key table compares, as overrides). The
lists `arms`, `datasets` and `seeds` say which runs the DVC matrix trains. A run's settings are
repo defaults ← profile ← dataset override ← network override, merged in that order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common.datasets import DATASETS
from common.results import run_name


class ConfigError(ValueError):
    """Bad user input: the message is one line naming the field and the allowed values."""


def choice(field_name: str, value: Any, allowed: Any) -> Any:
    """Return `value` if it is one of `allowed`, else raise a ConfigError naming the field."""
    if value not in allowed:
        names = ", ".join(str(a) for a in sorted(allowed, key=str))
        raise ConfigError(f"{field_name}: {value!r} is not one of {names}")
    return value


def number(field_name: str, value: Any, *, minimum: float, integer: bool = False) -> None:
    """ConfigError naming the field unless `value` is a number (an int if `integer`) ≥ minimum."""
    kind = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
        what = "an integer" if integer else "a number"
        raise ConfigError(f"{field_name}: {value!r} must be {what} >= {minimum:g}")


@dataclass(frozen=True)
class DataConfig:
    """Split, subset, augmentation and normalisation of the training set."""

    val_size: int = 5000  # 0: train on the whole training set (ResNet's final CIFAR models)
    train_size: int | None = None  # a subset of the remaining training images; None = all
    test_size: int | None = None  # a subset of the test set; None = all (smoke runs only)
    # Test images evaluated every epoch for the curves; None = all. With a subset, the reported
    # test error is one pass over the whole test set with the selected epoch's weights.
    test_curve_size: int | None = None
    # Also evaluate the training set in evaluation mode (history `train_eval_error`) in the last
    # `eval_train_epochs` of schedule.epochs: the training error without augmentation or batch
    # norm's batch-to-batch noise, where a regime criterion reads it (0: never).
    eval_train_epochs: int = 0
    split_seed: int = 0  # the same validation split for every seed
    pad: int = 4  # translation by up to `pad` pixels: pad, then random crop
    padding_mode: str = "zeros"
    flip: bool = True
    normalize: str = "per_pixel_mean"
    # A folder data set (ImageNet) streams from an ImageFolder directory (train/, val/) through
    # `workers` DataLoader processes, with the standard ImageNet augmentation instead of
    # pad/flip/normalize; its val/ is the test set, so it has no validation split (val_size: 0).
    # The directory is `root`, or if None the one the `data` stage listed (data/raw/<dataset>).
    root: str | None = None
    workers: int = 4

    def __post_init__(self) -> None:
        choice("data.padding_mode", self.padding_mode, ("zeros", "reflect"))
        choice("data.normalize", self.normalize, ("per_pixel_mean", "mean_std"))
        number("data.val_size", self.val_size, minimum=0, integer=True)
        number("data.split_seed", self.split_seed, minimum=0, integer=True)
        number("data.pad", self.pad, minimum=0, integer=True)
        number("data.workers", self.workers, minimum=0, integer=True)
        number("data.eval_train_epochs", self.eval_train_epochs, minimum=0, integer=True)
        for name in ("train_size", "test_size", "test_curve_size"):
            if getattr(self, name) is not None:
                number(f"data.{name}", getattr(self, name), minimum=1, integer=True)


def check_sizes(data: DataConfig, train_images: int, test_images: int, dataset: str) -> None:
    """ConfigError naming the size field that asks for more images than the data set holds
    (a subset larger than the data would silently be all of it)."""
    left = train_images - data.val_size
    if left < 1:
        raise ConfigError(
            f"data.val_size: {data.val_size} must be less than the {train_images} training "
            f"images of {dataset}"
        )
    limits = {
        "train_size": (left, f"training images of {dataset} left after val_size {data.val_size}"),
        "test_size": (test_images, f"test images of {dataset}"),
        "test_curve_size": (
            min(test_images, data.test_size or test_images),
            f"test images of this run ({dataset})",
        ),
    }
    for name, (limit, what) in limits.items():
        size = getattr(data, name)
        if size is not None and size > limit:
            raise ConfigError(f"data.{name}: {size} exceeds the {limit} {what} (omit it for all)")


@dataclass(frozen=True)
class OptimConfig:
    """SGD with momentum, as every paper here uses (dampening 0)."""

    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        number("optim.batch_size", self.batch_size, minimum=1, integer=True)
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float) or self.lr <= 0:
            raise ConfigError(f"optim.lr: {self.lr!r} must be a number > 0")
        number("optim.momentum", self.momentum, minimum=0)
        number("optim.weight_decay", self.weight_decay, minimum=0)


@dataclass(frozen=True)
class ScheduleConfig:
    """Multi-step learning-rate schedule, milestones in epochs or iterations (a paper's own rule,
    such as ResNet-110's warm-up, is one of the run's `callbacks`)."""

    epochs: int = 10
    max_steps: int = -1  # stop after this many iterations (-1: run all epochs)
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    unit: str = "epoch"

    def __post_init__(self) -> None:
        choice("schedule.unit", self.unit, ("epoch", "step"))
        number("schedule.epochs", self.epochs, minimum=1, integer=True)
        number("schedule.max_steps", self.max_steps, minimum=-1, integer=True)
        number("schedule.gamma", self.gamma, minimum=0)
        milestones = self.milestones if isinstance(self.milestones, list | tuple) else [None]
        for m in milestones:
            number("schedule.milestones", m, minimum=1, integer=True)
        if list(milestones) != sorted(set(milestones)):
            raise ConfigError(f"schedule.milestones: {list(milestones)} must increase strictly")
        object.__setattr__(self, "milestones", tuple(milestones))


@dataclass(frozen=True)
class TrainerConfig:
    """Lightning Trainer settings: DDP over GPUs and nodes is a change here, not in code."""

    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"  # auto: bf16-mixed where the hardware has it, else 32-true
    channels_last: bool = True
    # Intra-op CPU threads: fixed, not inherited from the machine, as the count changes the
    # numbers (reductions split differently); part of the run's digest.
    threads: int = 2
    limit_train_batches: int | float | None = None  # smoke runs only; None: every batch
    limit_val_batches: int | float | None = None

    def __post_init__(self) -> None:
        choice("trainer.accelerator", self.accelerator, ACCELERATORS)
        # Lightning's forms: a count, -1 or "auto" (all), or GPU ids as a string ("0,1").
        d = self.devices
        count = isinstance(d, int) and not isinstance(d, bool) and (d >= 1 or d == -1)
        if not (count or d == "auto" or (isinstance(d, str) and re.fullmatch(r"\d+(,\d+)*", d))):
            raise ConfigError(
                f"trainer.devices: {d!r} must be a count >= 1, -1 or 'auto' (all), or ids '0,1'"
            )
        number("trainer.num_nodes", self.num_nodes, minimum=1, integer=True)
        number("trainer.threads", self.threads, minimum=1, integer=True)
        choice("trainer.precision", self.precision, PRECISIONS)


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("auto", "64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
WANDB_MODES = ("offline", "online", "disabled")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run depends on; its hash tells whether a checkpoint belongs to it."""

    paper: str
    profile: str
    arm: str
    dataset: str
    seed: int
    model: dict[str, Any]
    select: str = "last"  # which epoch's test error is reported: last, or lowest validation error
    # A paper's own training behaviour (a Lightning Callback each, built like the model): name ->
    # {class_path, its arguments}; a mapping, so a network's entry merges into its profile's.
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        choice("select", self.select, ("last", "lowest_val"))
        if self.select == "lowest_val" and self.data.val_size == 0:
            raise ConfigError("select: lowest_val needs a validation set (data.val_size > 0)")
        choice("wandb.mode", self.wandb.get("mode", "offline"), WANDB_MODES)
        info = DATASETS[choice("dataset", self.dataset, DATASETS)]
        if info.folder and self.data.val_size != 0:
            raise ConfigError(
                f"data.val_size: {self.data.val_size} must be 0 for {self.dataset} "
                "(its val/ folder is the test set; there is no validation split)"
            )
        if info.train_images:  # a prepared set: its sizes are known before it is read
            check_sizes(self.data, info.train_images, info.test_images, self.dataset)
        build_model(self.model, info.shape[0], info.num_classes)  # its arguments, checked now
        build_callbacks(self.callbacks)

    @property
    def name(self) -> str:
        return run_name(self.arm, self.dataset, self.seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """The RunConfig `to_dict` wrote (a run's config.json), validated again; other keys of
        `d` (e.g. the data's input_shape) are ignored."""
        sections = {"data": DataConfig, "optim": OptimConfig, "schedule": ScheduleConfig,
                    "trainer": TrainerConfig}  # fmt: skip
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        for key, section in sections.items():
            values[key] = _section(section, values.get(key), key)
        return cls(**values)

    def digest(self) -> str:
        """Hash of what determines the result (not where it is logged, nor where a folder data
        set lives: its listing's hash is part of the run digest)."""
        d = self.to_dict()
        d.pop("wandb")
        d["data"].pop("root")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _section(cls: type, values: dict[str, Any] | None, name: str) -> Any:
    """Build a config dataclass, naming an unknown field and the allowed ones, or a value not of
    the field's type; the dataclass then checks ranges and choices."""
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{name}: {values!r} must be a mapping of settings")
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in allowed:
            raise ConfigError(f"{name}.{key}: unknown field (allowed: {', '.join(allowed)})")
    _check_types(cls.__init__, values, name)
    return cls(**values)


def instantiate(spec: Any, name: str, **given: Any) -> Any:
    """Instantiate `spec["class_path"]` with `given` and the spec's other keys as keyword
    arguments; every problem is a ConfigError naming `name` (the spec's field).

    Arguments are checked against the class's annotations first, so a value of the wrong type
    is reported by its field name rather than by whatever comparison it breaks inside the class.
    """
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ConfigError(f"{name}.class_path: missing (a `module.Class` path)")
    kwargs = {k: v for k, v in spec.items() if k != "class_path"}
    module_name, _, class_name = str(spec["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"{name}.class_path: cannot import {spec['class_path']!r}") from err
    _check_types(cls.__init__, kwargs, name)
    takes = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in takes.values()) and set(given) - set(takes):
        raise ConfigError(
            f"{name}.class_path: {spec['class_path']} must take {', '.join(given)} as keyword "
            "arguments (the contracts: papers/README.md)"
        )
    try:
        return cls(**given, **kwargs)
    except (TypeError, ValueError) as err:  # an argument the class does not take, or a bad value
        raise ConfigError(f"{name}: {err}") from err


def build_model(spec: dict[str, Any], in_channels: int, num_classes: int) -> Any:
    """The network of `spec` (`model`): every model takes `in_channels` and `num_classes`."""
    return instantiate(spec, "model", in_channels=in_channels, num_classes=num_classes)


def build_callbacks(specs: Any) -> list[Any]:
    """The run's `callbacks` (name -> spec), in the order the params list them."""
    if not isinstance(specs, dict):
        raise ConfigError(f"callbacks: {specs!r} must be a mapping of names to {{class_path: ...}}")
    return [instantiate(spec, f"callbacks.{name}") for name, spec in specs.items()]


def _check_types(function: Any, values: dict[str, Any], name: str) -> None:
    """ConfigError naming the first argument whose value is not of its annotated type (bool, int,
    float, str, None and their unions; other annotations are left to the callee)."""
    hints = typing.get_type_hints(function)
    for key, value in values.items():
        hint = hints.get(key)
        kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if all(k in (int, float, bool, str, type(None)) for k in kinds) and not any(
            _is_a(value, k) for k in kinds
        ):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise ConfigError(f"{name}.{key}: {value!r} is not of type {names}")


def _is_a(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


class _UniqueKeys(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    problem=f"key {key!r} given twice in one mapping (line {line})"
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: Path, what: str) -> Any:
    """A YAML file's content; its absence, a syntax error or a duplicate key is one line
    `<what>: <path> ...`."""
    if not Path(path).is_file():
        raise ConfigError(f"{what}: {path} does not exist")
    try:
        return yaml.load(Path(path).read_text(), Loader=_UniqueKeys)
    except yaml.YAMLError as err:
        problem = " ".join(str(err).split())
        raise ConfigError(f"{what}: {path} is not valid YAML: {problem}") from err


def load_params(path: Path) -> dict[str, Any]:
    """A params file as a mapping; its absence, a YAML syntax error or a duplicate key is one
    line."""
    params = load_yaml(path, "params") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"params: {path} must hold a mapping of settings")
    return params


def check_matrix(params: dict[str, Any]) -> None:
    """The run matrix (arms × datasets × seeds) a paper trains: non-empty lists of names, seeds."""
    for key in ("arms", "datasets", "seeds"):
        values = params.get(key)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{key}: {values!r} must be a non-empty list")
    for seed in params["seeds"]:
        number("seeds", seed, minimum=0, integer=True)
    for dataset in params["datasets"]:
        choice("datasets", dataset, DATASETS)


# What a profile must say itself (its data set or arm may): a silent default would train a run
# of another length, batch or learning rate than the one the profile describes.
REQUIRED = {"optim": ("batch_size", "lr"), "schedule": ("epochs",)}


def resolve(
    params: dict[str, Any],
    *,
    paper: str,
    arm: str,
    dataset: str,
    seed: int,
    shared: dict[str, Any] | None = None,
) -> RunConfig:
    """The RunConfig of one (arm, dataset, seed) under the params' active profile.

    `shared` holds the repo-wide defaults (root params.yaml: trainer, wandb) under the paper's.
    """
    profiles = params.get("profiles")
    if not isinstance(profiles, dict) or not profiles:
        raise ConfigError("profiles: missing (a mapping of profile names: default, smoke, paper)")
    check_matrix(params)
    profile = choice("profile", params.get("profile", "default"), profiles)
    block = profiles[profile]
    datasets = block.get("datasets", {})
    choice("dataset", dataset, DATASETS)
    if dataset not in datasets:
        raise ConfigError(
            f"dataset: {dataset!r} has no protocol in profile {profile!r} "
            f"(allowed: {', '.join(datasets)})"
        )
    networks = params.get("networks", {})
    choice("arm", arm, networks)
    run = merge(shared or {}, _without(block, "datasets"))
    run = merge(merge(run, datasets[dataset]), networks[arm])
    sections = {"model", "select", "callbacks", "data", "optim", "schedule", "trainer", "wandb"}
    unknown = set(run) - sections
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown section in profile {profile!r}")
    for section, keys in REQUIRED.items():
        for key in keys:
            given = run.get(section) or {}
            if isinstance(given, dict) and key not in given:  # not a mapping: _section says so
                raise ConfigError(
                    f"{section}.{key}: missing in profile {profile!r} for arm {arm!r} on "
                    f"{dataset} (required: no default stands in for it)"
                )
    return RunConfig(
        paper=paper,
        profile=profile,
        arm=arm,
        dataset=dataset,
        seed=seed,
        model=run.get("model", {}),
        select=run.get("select", "last"),
        callbacks=run.get("callbacks", {}),
        data=_section(DataConfig, run.get("data"), "data"),
        optim=_section(OptimConfig, run.get("optim"), "optim"),
        schedule=_section(ScheduleConfig, run.get("schedule"), "schedule"),
        trainer=_section(TrainerConfig, run.get("trainer"), "trainer"),
        wandb=run.get("wandb", {}),
    )


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def check_machine(trainer: TrainerConfig) -> None:
    """ConfigError naming the trainer setting this machine cannot run (an accelerator it lacks,
    more GPUs than it has) or Lightning does not know (a strategy), before anything trains."""
    import torch  # here: the data and table processes read configurations without it

    accelerator, gpus = trainer.accelerator, torch.cuda.device_count()
    present = {
        "gpu": gpus > 0, "cuda": gpus > 0, "mps": torch.backends.mps.is_available(),
        "tpu": importlib.util.find_spec("torch_xla") is not None,
    }  # fmt: skip
    if not present.get(accelerator, True):
        here = ", ".join(a for a in ACCELERATORS if present.get(a, True))
        raise ConfigError(
            f"trainer.accelerator: {accelerator!r} is not on this machine (allowed here: {here})"
        )
    devices = trainer.devices
    if accelerator in ("gpu", "cuda") and isinstance(devices, int) and devices > gpus:
        raise ConfigError(f"trainer.devices: {devices} exceeds this machine's {gpus} GPU(s)")
    if trainer.strategy != "auto":
        from lightning.pytorch.strategies import StrategyRegistry

        choice("trainer.strategy", trainer.strategy, ["auto", *StrategyRegistry])
