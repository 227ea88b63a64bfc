"""Residual Networks Behave Like Ensembles of Relatively Shallow Networks — Veit, Wilber, Belongie
2016 (arXiv 1605.06431): the lesion study and the path analysis, on trained networks, no retraining.

Unraveled view (Sec. 3): a network of n residual blocks y_i = y_{i-1} + f_i(y_{i-1}) expands into
2^n paths from input to output, one per choice of entering or skipping each block; a path that
enters k blocks has length k, so the lengths are Binomial(n, 1/2): C(n, k) paths of length k.

    y_3 = y_0 + f_1(y_0) + f_2(y_0 + f_1(y_0)) + f_3(y_0 + f_1(y_0) + f_2(y_0 + f_1(y_0)))  (Eq. 4)

Lesions (Sec. 4), at test time: deleting block i leaves only its shortcut, y_i = shortcut(y_{i-1})
(post-activation: ReLU(shortcut(x)), equal to shortcut(x) since x ≥ 0; a downsampling block keeps
its zero-padding shortcut alone) and removes half of the paths; a plain net has one path, and
deleting one of its layers (conv-BN-ReLU → identity, where the shape allows) breaks it. Reordering
swaps blocks of the same shape. Each lesion is a context manager that swaps wrappers into the
network's stages and puts the very same modules back on exit: no weight or buffer is touched.

Gradient per path length (Sec. 5, Fig. 6): one forward pass of a batch, then for each k a backward
pass through k randomly chosen residual branches and the n − k skips only (the ReLU masks of the
full forward kept); the norm of the gradient at the input of the first block, averaged over the
batch and the draws, is the magnitude g(k) of a path of length k; C(n, k) · g(k) is the total
gradient from paths of length k. The effective paths are the shortest band of lengths holding a
given share of that total (the paper: 5–17 of 54 blocks for ResNet-110).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from math import comb
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau
from torch import Tensor, nn

from papers.resnet.model import ResidualBlock, ResNet

Batches = Sequence[tuple[Tensor, Tensor]]


class Unit(NamedTuple):
    """What the lesion study deletes: residual block `block` whole (layer None), or in a plain net
    one conv-BN-ReLU `layer` of that block. `downsampling`: it changes the shape (a residual block
    then keeps its shortcut; a plain layer cannot be deleted at all)."""

    block: int
    layer: int | None
    downsampling: bool


def is_residual(model: ResNet) -> bool:
    """Every block has a shortcut (a plain net has none)."""
    return all(block.shortcut is not None for block in model.blocks)


def _check_post(model: ResNet) -> None:
    if any(block.order != "post" for block in model.blocks):
        raise ValueError("order: lesions are defined here for post-activation blocks only")


def lesion_units(model: ResNet) -> list[Unit]:
    """The residual blocks of a ResNet, or the layers of a plain net, in order of depth."""
    _check_post(model)
    if is_residual(model):
        return [
            Unit(i, None, not isinstance(block.shortcut, nn.Identity))
            for i, block in enumerate(model.blocks)
        ]
    return [
        Unit(i, j, conv.stride != (1, 1) or conv.in_channels != conv.out_channels)
        for i, block in enumerate(model.blocks)
        for j, (conv, _) in enumerate(block.layers())
    ]


class Lesioned(nn.Module):
    """A block with parts deleted: its residual branch (y = ReLU(shortcut(x))), or in a plain
    block the conv-BN-ReLU layers in `layers` (each becomes the identity)."""

    def __init__(self, block: ResidualBlock, layers: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.block, self.layers = block, layers

    def forward(self, x: Tensor) -> Tensor:
        if self.block.shortcut is not None:
            return F.relu(self.block.shortcut(x))
        for j, (conv, bn) in enumerate(self.block.layers()):
            if j not in self.layers:
                x = F.relu(bn(conv(x)))
        return x


def _shape(block: ResidualBlock) -> tuple[int, int, tuple[int, ...]]:
    conv = block.layers()[0][0]
    return conv.in_channels, block.out_channels, conv.stride


@contextmanager
def _replaced(model: ResNet, wrap: dict[int, nn.Module], order: Sequence[int]) -> Iterator[ResNet]:
    """Slot p of the network runs `wrap.get(order[p], block order[p])`; every slot gets its own
    block back on exit, whatever happened inside."""
    slots = [(stage, j) for stage in model.stages for j in range(len(stage))]
    blocks = [stage[j] for stage, j in slots]
    if sorted(order) != list(range(len(blocks))):
        raise ValueError(f"order: {list(order)} is not a permutation of the {len(blocks)} blocks")
    for p, i in enumerate(order):
        if _shape(blocks[i]) != _shape(blocks[p]):
            raise ValueError(f"order: block {i} cannot run in slot {p} (another shape)")
    try:
        for (stage, j), i in zip(slots, order, strict=True):
            stage[j] = wrap.get(i, blocks[i])
        yield model
    finally:
        for (stage, j), block in zip(slots, blocks, strict=True):
            stage[j] = block


def lesioned(
    model: ResNet, deleted: Iterable[Unit] = (), order: Sequence[int] | None = None
) -> Any:
    """Context manager: `model` with the units `deleted` and its blocks run in `order` (block
    order[p] in slot p, same shapes only), restored exactly on exit."""
    _check_post(model)
    blocks = model.blocks
    layers: dict[int, set[int]] = {}
    for unit in deleted:
        if unit.layer is None and blocks[unit.block].shortcut is None:
            raise ValueError(f"deleted: block {unit.block} has no shortcut (delete its layers)")
        if unit.layer is not None and unit.downsampling:
            raise ValueError(f"deleted: layer {unit.layer} of block {unit.block} changes shape")
        layers.setdefault(unit.block, set()).update([] if unit.layer is None else [unit.layer])
    wrap = {i: Lesioned(blocks[i], frozenset(js)) for i, js in layers.items()}
    return _replaced(model, wrap, range(len(blocks)) if order is None else order)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """BN on its running statistics (nothing updated), each module's mode restored on exit."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.train(training)


def test_error(model: nn.Module, batches: Batches) -> float:
    """Top-1 error (%) of `model` over `batches`."""
    wrong = total = 0
    with evaluating(model), torch.inference_mode():
        for images, labels in batches:
            wrong += int((model(images).argmax(1) != labels).sum())
            total += len(labels)
    return 100.0 * wrong / total


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))}


def delete_one(model: ResNet, batches: Batches, chance: float) -> dict[str, Any]:
    """Fig. 3: test error with each unit deleted alone (downsampling units marked; a plain net's
    shape-changing layers cannot be deleted and are listed with error None)."""
    base = test_error(model, batches)
    units = []
    for unit in lesion_units(model):
        deletable = unit.layer is None or not unit.downsampling
        error = None
        if deletable:
            with lesioned(model, [unit]):
                error = test_error(model, batches)
        units.append({**unit._asdict(), "error": error})
    plain = [u["error"] for u in units if u["error"] is not None and not u["downsampling"]]
    result = {
        "base_error": base, "chance_error": chance, "units": units,
        "max_error_change": max(plain) - base, "mean_error_change": float(np.mean(plain)) - base,
        "min_error": min(plain), "min_error_vs_chance": min(plain) - chance,
    }  # fmt: skip
    down = [u["error"] for u in units if u["downsampling"] and u["error"] is not None]
    if down:
        result["max_error_change_downsampling"] = max(down) - base
    return result


def delete_k(
    model: ResNet, batches: Batches, ks: Sequence[int], draws: int, rng: np.random.Generator,
    chance: float,
) -> dict[str, Any]:  # fmt: skip
    """Fig. 5a: test error with k random non-downsampling blocks deleted at once, `draws` times
    per k (mean ± std over draws)."""
    candidates = [u for u in lesion_units(model) if not u.downsampling]
    if max(ks) > len(candidates):
        raise ValueError(f"ks: {max(ks)} exceeds the {len(candidates)} deletable blocks")
    curve = []
    for k in ks:
        errors = []
        for _ in range(draws):
            chosen = rng.choice(len(candidates), size=k, replace=False)
            with lesioned(model, [candidates[c] for c in chosen]):
                errors.append(test_error(model, batches))
        curve.append({"k": k, "errors": errors, **_stats(errors)})
    by_k = {point["k"]: point["mean"] for point in curve}
    result: dict[str, Any] = {"sweep_base_error": test_error(model, batches), "curve": curve}
    if 10 in by_k:
        result["error_k10"] = by_k[10]
        result["error_k10_vs_chance"] = by_k[10] - chance
    return result


def swappable_pairs(model: ResNet) -> list[tuple[int, int]]:
    """Pairs of blocks of the same shape that are not downsampling: they may trade places."""
    units = [u for u in lesion_units(model) if not u.downsampling]
    blocks = model.blocks
    return [
        (a.block, b.block)
        for n, a in enumerate(units)
        for b in units[n + 1 :]
        if _shape(blocks[a.block]) == _shape(blocks[b.block])
    ]


def reorder(
    model: ResNet, batches: Batches, ks: Sequence[int], draws: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Fig. 5b: test error after swapping k random pairs of same-shape blocks, `draws` times per
    k, with Kendall's tau between the original and the new order."""
    pairs, n = swappable_pairs(model), len(model.blocks)
    base, curve = test_error(model, batches), []
    for k in ks:
        errors, taus = [], []
        for _ in range(draws):
            order = list(range(n))
            for p in rng.choice(len(pairs), size=k, replace=False):
                a, b = pairs[p]
                order[a], order[b] = order[b], order[a]
            with lesioned(model, order=order):
                errors.append(test_error(model, batches))
            taus.append(float(kendalltau(range(n), order).statistic))
        curve.append({"k": k, "errors": errors, "taus": taus, **_stats(errors),
                      "tau_mean": float(np.mean(taus))})  # fmt: skip
    return {"sweep_base_error": base, "curve": curve, "error_growth": curve[-1]["mean"] - base}


def path_lengths(n: int, mass: float = 0.95) -> dict[str, Any]:
    """Fig. 6a: C(n, k) paths of length k, 2^n in all, and the central band of lengths that
    holds at least `mass` of them (the paper: 95% of ResNet-110's paths are 19–35 blocks long)."""
    counts = [comb(n, k) for k in range(n + 1)]
    low, high = n // 2, (n + 1) // 2  # widened symmetrically about the mean n/2
    while sum(counts[low : high + 1]) < mass * 2**n:
        low, high = low - 1, high + 1
    return {"n": n, "counts": counts, "fraction": [c / 2**n for c in counts],
            "band": [low, high]}  # fmt: skip


def shortest_band(weights: Sequence[float], mass: float) -> tuple[int, int]:
    """The shortest [low, high] (leftmost of equals): Σ weights[low..high] ≥ mass · total."""
    total, best = float(sum(weights)), (0, len(weights) - 1)
    for low in range(len(weights)):
        running = 0.0
        for high in range(low, len(weights)):
            running += weights[high]
            if running >= mass * total:
                if high - low < best[1] - best[0]:
                    best = (low, high)
                break
    return best


class BlockGraph(NamedTuple):
    """One block of a recorded forward pass: what a backward pass through it needs."""

    input: Tensor  # y_{i-1}, a leaf
    residual: Tensor  # f_i(y_{i-1})
    shortcut: Tensor  # shortcut(y_{i-1})
    active: Tensor  # ReLU'(f_i + shortcut): 1 where the block's output is positive
    output: Tensor  # y_i, a leaf (the next block's input is a copy of it)


class _Record(nn.Module):
    """Runs a block, cutting the graph at its input and output, and keeps both ends."""

    def __init__(self, block: ResidualBlock, graphs: list[BlockGraph]) -> None:
        super().__init__()
        self.block, self.graphs = block, graphs

    def forward(self, x: Tensor) -> Tensor:
        x = x.detach().requires_grad_()
        f, shortcut = self.block.residual(x), self.block.shortcut(x)
        y = F.relu(f + shortcut)
        out = y.detach().requires_grad_()
        self.graphs.append(BlockGraph(x, f, shortcut, (y > 0).to(y.dtype), out))
        return out


class PathGradients:
    """One forward pass of a batch (BN on its running statistics), kept block by block; then the
    gradient of the summed loss at the first block's input along any choice of branches, by
    backward passes alone."""

    def __init__(self, model: ResNet, images: Tensor, labels: Tensor) -> None:
        _check_post(model)
        self.graphs: list[BlockGraph] = []
        wrap = {i: _Record(block, self.graphs) for i, block in enumerate(model.blocks)}
        with evaluating(model), torch.enable_grad(), _replaced(model, wrap, range(len(wrap))):
            loss = F.cross_entropy(model(images), labels, reduction="sum")
            (self.top,) = torch.autograd.grad(loss, self.graphs[-1].output)

    def gradient(self, residual: Iterable[int]) -> Tensor:
        """∂loss/∂y_0 through the residual branches of blocks `residual` and the shortcuts of
        the others (the ReLU masks of the full forward pass kept)."""
        chosen, grad = set(residual), self.top
        for i in reversed(range(len(self.graphs))):
            graph = self.graphs[i]
            through = graph.residual if i in chosen else graph.shortcut
            (grad,) = torch.autograd.grad(
                through, graph.input, grad * graph.active, retain_graph=True
            )
        return grad

    def norm(self, residual: Iterable[int]) -> float:
        """The gradient's norm per image, averaged over the batch."""
        return float(self.gradient(residual).flatten(1).norm(dim=1).mean())


def path_gradients(
    model: ResNet, images: Tensor, labels: Tensor, samples: int, rng: np.random.Generator,
    mass: float,
) -> dict[str, Any]:  # fmt: skip
    """Fig. 6b/c: gradient magnitude g(k) of paths of length k = 0 … n (k residual branches drawn
    at random, `samples` draws each), the total C(n, k) · g(k), and the effective band."""
    n, paths = len(model.blocks), PathGradients(model, images, labels)
    magnitude = [
        float(np.mean([paths.norm(rng.choice(n, size=k, replace=False)) for _ in range(samples)]))
        for k in range(n + 1)
    ]
    total = [comb(n, k) * g for k, g in enumerate(magnitude)]
    low, high = shortest_band(total, mass)
    return {
        "n": n, "magnitude": magnitude, "total": total, "mass": mass,
        "effective_band": [low, high], "effective_low_fraction": low / n,
        "effective_high_fraction": high / n,
    }  # fmt: skip
