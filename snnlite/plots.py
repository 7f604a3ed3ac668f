"""Matplotlib helpers shared by the book's notebooks (one look, no copies between chapters)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["accuracy_over_time", "if_trace", "new_figure", "setup"]


def setup() -> None:
    """A compact, readable default style for every chapter."""
    plt.rcParams.update({
        "figure.dpi": 96, "savefig.dpi": 96, "figure.figsize": (7.0, 3.2),
        "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
        "axes.spines.right": False, "font.size": 10, "legend.frameon": False,
    })  # fmt: skip


def new_figure(ncols: int = 1, width: float = 7.0, height: float = 3.2) -> tuple[Figure, Any]:
    """A figure with ``ncols`` side-by-side axes, laid out tightly."""
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), layout="constrained")
    return fig, axes


def if_trace(
    axes: Sequence[Axes], membrane: torch.Tensor, spikes: torch.Tensor, theta: float
) -> None:
    """Membrane potential (after reset) and spike train of one neuron over time.

    membrane: (T,) potential u(t) after each step; spikes: (T,) theta-valued spikes.
    """
    steps = np.arange(1, len(membrane) + 1)
    ax_u, ax_s = axes
    ax_u.step(np.r_[0, steps], np.r_[theta / 2, membrane.numpy()], where="post", color="C0")
    ax_u.axhline(theta, color="C3", ls="--", lw=1, label=r"threshold $\theta$")
    ax_u.set(xlabel="time step t", ylabel="membrane u(t)")
    ax_u.legend(loc="lower right")
    fired = steps[spikes.numpy() > 0]
    ax_s.vlines(fired, 0, 1, color="k")
    ax_s.set(xlabel="time step t", yticks=[], xlim=(0, len(membrane) + 1),
             title=f"{len(fired)} spikes in {len(membrane)} steps")  # fmt: skip


def accuracy_over_time(
    ax: Axes,
    curves: Mapping[str, Mapping[int, float]],
    reference: Mapping[str, float] | None = None,
    percent: bool = True,
) -> None:
    """Accuracy against T (log2 axis), one line per curve; dashed lines for references."""
    scale = 100 if percent else 1
    for i, (label, curve) in enumerate(curves.items()):
        ts = sorted(int(t) for t in curve)
        ax.plot(ts, [scale * curve[t] if t in curve else scale * curve[str(t)] for t in ts],
                "o-", color=f"C{i}", label=label)  # fmt: skip
    for j, (label, value) in enumerate((reference or {}).items()):
        ax.axhline(scale * value, ls="--", lw=1, color=f"C{len(curves) + j}", label=label)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="time steps T", ylabel="accuracy (%)" if percent else "accuracy")
    ax.legend()
