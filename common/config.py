"""One training run's configuration, resolved from a paper's `params.yaml`, validated at the edge.

A paper's params file holds `profiles` (default = laptop CPU, paper = the paper's protocol), each
with per-dataset overrides, and `networks` (the arms its key table compares, as overrides). The
lists `arms`, `datasets` and `seeds` say which runs the DVC matrix trains. A run's settings are
repo defaults ← profile ← dataset override ← network override, merged in that order.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator

from common.datasets import DATASETS
from common.results import run_name
from common.schema import ConfigError, Model, validate


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


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("auto", "64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
WANDB_MODES = ("offline", "online", "disabled")


class DataConfig(Model):
    """Split, subset, augmentation and normalisation of the training set."""

    val_size: int = Field(5000, ge=0)
    """Training images held out for validation; 0: train on the whole training set."""
    train_size: int | None = Field(None, ge=1)
    """A subset of the training images left after val_size; omitted: all."""
    test_size: int | None = Field(None, ge=1)
    """A subset of the test set; omitted: all (smoke runs only)."""
    test_curve_size: int | None = Field(None, ge=1)
    """Test images evaluated every epoch for the curves; omitted: all. With a subset, the reported
    test error is one pass over the whole test set with the selected epoch's weights."""
    eval_train_epochs: int = Field(0, ge=0)
    """Also evaluate the training set in evaluation mode (history `train_eval_error`) in the last
    eval_train_epochs of schedule.epochs: the training error without augmentation or batch norm's
    batch-to-batch noise, where a regime criterion reads it (0: never)."""
    split_seed: int = Field(0, ge=0)
    """The same validation split for every seed."""
    pad: int = Field(4, ge=0)
    """Translation by up to pad pixels: pad, then random crop."""
    padding_mode: Literal["zeros", "reflect"] = "zeros"
    """How the padding is filled."""
    flip: bool = True
    """Random horizontal flips."""
    normalize: Literal["per_pixel_mean", "mean_std"] = "per_pixel_mean"
    """Subtract the per-pixel mean, or standardise each channel."""
    root: str | None = None
    """A folder data set's directory (train/, val/); omitted: the one the data stage listed
    (data/raw/<dataset>). Folder sets stream with the standard ImageNet augmentation instead of
    pad/flip/normalize; their val/ is the test set (val_size: 0)."""
    workers: int = Field(4, ge=0)
    """DataLoader processes of a folder data set."""


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


class OptimConfig(Model):
    """SGD with momentum, as every paper here uses (dampening 0)."""

    batch_size: int = Field(128, ge=1)
    """Images per step (per process under DDP)."""
    lr: float = Field(0.1, gt=0)
    """The learning rate before the first milestone."""
    momentum: float = Field(0.9, ge=0)
    """SGD's momentum."""
    nesterov: bool = False
    """Nesterov momentum."""
    weight_decay: float = Field(1e-4, ge=0)
    """L2 penalty, added to each gradient."""


class ScheduleConfig(Model):
    """Multi-step learning-rate schedule, milestones in epochs or iterations (a paper's own rule
    is one of the run's `callbacks`)."""

    epochs: int = Field(10, ge=1)
    """Epochs to train (or the most, with max_steps)."""
    max_steps: int = Field(-1, ge=-1)
    """Stop after this many iterations (-1: run all epochs)."""
    milestones: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    """Epochs or iterations (unit) at which the LR is multiplied by gamma, increasing strictly."""
    gamma: float = Field(0.1, ge=0)
    """The LR's factor at each milestone."""
    unit: Literal["epoch", "step"] = "epoch"
    """What milestones count: epochs or iterations."""

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, milestones: list[int]) -> list[int]:
        if milestones != sorted(set(milestones)):
            raise ValueError(f"{milestones} must increase strictly")
        return milestones


class TrainerConfig(Model):
    """Lightning Trainer settings: DDP over GPUs and nodes is a change here, not in code."""

    accelerator: Literal[*ACCELERATORS] = "auto"
    """cpu, gpu, ... or auto (a GPU if there is one)."""
    devices: int | str = 1
    """Lightning's forms: a count >= 1, -1 or 'auto' (all), or GPU ids as a string ('0,1')."""
    strategy: str = "auto"
    """auto, ddp, ddp_find_unused_parameters_true, ... (Lightning's strategies)."""
    num_nodes: int = Field(1, ge=1)
    """Machines under DDP."""
    precision: Literal[*PRECISIONS] = "auto"
    """auto: bf16-mixed where the hardware has it, else 32-true."""
    channels_last: bool = True
    """Channels-last memory format (faster convolutions on CPUs and GPUs)."""
    threads: int = Field(2, ge=1)
    """Intra-op CPU threads: fixed, not inherited from the machine, as the count changes the
    numbers (reductions split differently); part of the run's digest."""
    limit_train_batches: int | float | None = None
    """Smoke runs only; omitted: every batch."""
    limit_val_batches: int | float | None = None
    """Smoke runs only; omitted: every batch."""

    @field_validator("devices")
    @classmethod
    def _devices(cls, d: int | str) -> int | str:
        count = isinstance(d, int) and (d >= 1 or d == -1)
        if not (count or d == "auto" or (isinstance(d, str) and re.fullmatch(r"\d+(,\d+)*", d))):
            raise ValueError(f"{d!r} must be a count >= 1, -1 or 'auto' (all), or ids '0,1'")
        return d


class WandbConfig(Model):
    """Weights & Biases logging (WANDB_MODE overrides the mode)."""

    mode: Literal[*WANDB_MODES] = "offline"
    """offline (synced later with `wandb sync`), online, or disabled."""
    project: str = "resnet-family"
    """The W&B project every paper's runs log to."""
    dir: str = "."
    """Where the offline runs are written (`<dir>/wandb/`); the paper's folder by default."""


IDENTITY = ("paper", "profile", "arm", "dataset", "seed")  # which run; the rest: its settings


class RunConfig(Model):
    """Everything one run depends on; its hash tells whether a checkpoint belongs to it."""

    paper: str
    profile: str
    arm: str
    dataset: Literal[*DATASETS]
    seed: int = Field(ge=0)
    model: dict[str, Any]
    """The network: `class_path` (`module.Class`) and its arguments."""
    select: Literal["last", "lowest_val"] = "last"
    """Which epoch's test error is reported: the last, or that of lowest validation error."""
    callbacks: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """A paper's own training behaviour (a Lightning Callback each, built like the model): name ->
    {class_path, its arguments}; a mapping, so a network's entry merges into its profile's."""
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    trainer: TrainerConfig = TrainerConfig()
    wandb: WandbConfig = WandbConfig()

    def model_post_init(self, context: Any) -> None:
        """What one field cannot say alone: the data set's sizes, the model's and the callbacks'
        arguments (built once now, before anything trains)."""
        if self.select == "lowest_val" and self.data.val_size == 0:
            raise ConfigError("select: lowest_val needs a validation set (data.val_size > 0)")
        info = DATASETS[self.dataset]
        if info.folder and self.data.val_size != 0:
            raise ConfigError(
                f"data.val_size: {self.data.val_size} must be 0 for {self.dataset} "
                "(its val/ folder is the test set; there is no validation split)"
            )
        if info.train_images:  # a prepared set: its sizes are known before it is read
            check_sizes(self.data, info.train_images, info.test_images, self.dataset)
        build_model(self.model, info.shape[0], info.num_classes)
        build_callbacks(self.callbacks)

    @property
    def name(self) -> str:
        return run_name(self.arm, self.dataset, self.seed)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """The RunConfig `to_dict` wrote (a run's config.json), validated again; other keys of
        `d` (e.g. the data's input_shape) are ignored."""
        return validate(cls, {k: v for k, v in d.items() if k in cls.model_fields})

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


class Matrix(Model):
    """The runs a paper trains: arms × datasets × seeds (a DVC matrix)."""

    datasets: list[Literal[*DATASETS]] = Field(min_length=1)
    """The data sets the runs train on, each one of the active profile's."""
    seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    """The seeds each arm trains with on each data set."""
    arms: list[str] = Field(min_length=1)
    """The networks trained, each one of `networks`."""


def check_matrix(params: dict[str, Any]) -> Matrix:
    """The params' run matrix (arms × datasets × seeds), checked alone (the rest of the file may
    be another's: a test's, or a paper's under construction)."""
    return validate(Matrix, {k: params.get(k) for k in Matrix.model_fields})


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
    sections = set(RunConfig.model_fields) - set(IDENTITY)
    unknown = sorted(set(run) - sections)
    if unknown:
        allowed = ", ".join(f for f in RunConfig.model_fields if f in sections)
        raise ConfigError(
            f"{unknown[0]}: unknown section in profile {profile!r} (allowed: {allowed})"
        )
    for section, keys in REQUIRED.items():
        for key in keys:
            given = run.get(section) or {}
            if isinstance(given, dict) and key not in given:  # not a mapping: the schema says so
                raise ConfigError(
                    f"{section}.{key}: missing in profile {profile!r} for arm {arm!r} on "
                    f"{dataset} (required: no default stands in for it)"
                )
    identity = dict(zip(IDENTITY, (paper, profile, arm, dataset, seed), strict=True))
    return validate(RunConfig, {**identity, **run})


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
