"""The paper's figures drawn from the analyses' JSON (the stage's PNGs and the notebook alike).

Each function takes one or more results of the same analysis (one per seed) and returns a bare
matplotlib Figure (no pyplot, no GUI backend).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

Result = dict[str, Any]


def _label(result: Result) -> str:
    return f"{result['arm']} s{result['seed']}"


def delete_one(results: Sequence[Result]) -> Figure:
    """Fig. 3: test error with each unit deleted; downsampling units marked, baseline dashed."""
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    for r in results:
        units = [u for u in r["units"] if u["error"] is not None]
        x = np.arange(1, len(units) + 1)
        line = ax.plot(x, [u["error"] for u in units], marker="o", ms=3, label=_label(r))[0]
        down = [(i, u["error"]) for i, u in zip(x, units, strict=True) if u["downsampling"]]
        if down:
            ax.scatter(*zip(*down, strict=True), marker="s", s=60, facecolors="none",
                       edgecolors="k")  # fmt: skip
        ax.axhline(r["base_error"], ls="--", lw=0.8, color=line.get_color())
    ax.axhline(results[0]["chance_error"], ls=":", color="gray", label="chance")
    unit = "layer" if results[0]["units"][0]["layer"] is not None else "block"
    ax.set(xlabel=f"{unit} deleted (squares: downsampling)", ylabel="test error (%)", ylim=(0, 100))
    ax.legend(fontsize=7)
    return fig


def delete_k(results: Sequence[Result]) -> Figure:
    """Fig. 5a: test error vs the number of blocks deleted at random (mean ± std over draws)."""
    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.add_subplot()
    for r in results:
        ks = [p["k"] for p in r["curve"]]
        ax.errorbar(ks, [p["mean"] for p in r["curve"]], [p["std"] for p in r["curve"]],
                    capsize=2, marker="o", ms=3, label=_label(r))  # fmt: skip
    ax.set(xlabel="blocks deleted", ylabel="test error (%)", ylim=(0, 100))
    ax.legend(fontsize=7)
    return fig


def reorder(results: Sequence[Result]) -> Figure:
    """Fig. 5b: test error vs Kendall's tau of the block order after k random swaps."""
    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.add_subplot()
    for r in results:
        taus = [t for p in r["curve"] for t in p["taus"]]
        ax.scatter(taus, [e for p in r["curve"] for e in p["errors"]], s=8, label=_label(r))
    ax.set(xlabel="Kendall's tau", ylabel="test error (%)", ylim=(0, 100))
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    return fig


def paths(lengths: Result, results: Sequence[Result]) -> Figure:
    """Fig. 6: (a) paths per length, (b) gradient magnitude per path length, (c) total gradient
    per path length with the effective band shaded."""
    fig = Figure(figsize=(11, 3.2))
    a, b, c = fig.subplots(1, 3)
    k = np.arange(lengths["n"] + 1)
    a.bar(k, lengths["fraction"])
    a.set(xlabel="path length", ylabel="fraction of paths", title="(a) path lengths")
    for r in results:
        b.semilogy(k, r["magnitude"], marker="o", ms=3, label=_label(r))
        total = np.array(r["total"])
        line = c.plot(k, total / total.sum(), marker="o", ms=3, label=_label(r))[0]
        c.axvspan(*r["effective_band"], alpha=0.15, color=line.get_color())
    b.set(xlabel="path length", ylabel="gradient magnitude", title="(b) per path")
    c.set(xlabel="path length", ylabel="share of total gradient", title="(c) total")
    b.legend(fontsize=7)
    return fig
