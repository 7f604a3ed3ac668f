"""Matplotlib helpers shared by the book's notebooks (one look, no copies between chapters).

The one module of the package that needs matplotlib (the ``plots`` or ``book`` extra:
``pip install snnlite[plots]``); ``import snnlite`` does not import it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "accuracy_over_time",
    "firing_rates",
    "gated_pool_schematic",
    "if_schematic",
    "if_trace",
    "markdown_table",
    "new_figure",
    "setup",
]


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
    ax_u.axhline(theta, color="C3", ls="--", lw=1)
    ax_u.set(xlabel="time step t", ylabel="membrane u(t)",
             title=rf"membrane after reset (dashed: $\theta$ = {theta:g})")  # fmt: skip
    fired = steps[spikes.numpy() > 0]
    ax_s.vlines(fired, 0, 1, color="k")
    ax_s.set(xlabel="time step t", yticks=[], xlim=(0, len(membrane) + 1),
             title=f"{len(fired)} spikes in {len(membrane)} steps")  # fmt: skip


def if_schematic(
    axes: Sequence[Axes],
    currents: torch.Tensor,
    before: torch.Tensor,
    after: torch.Tensor,
    spikes: torch.Tensor,
    theta: float,
) -> None:
    """The IF neuron step by step: integrate, fire at theta, reset by subtraction.

    currents, before, after, spikes: (T,) input z(t), potential v(t) before the reset,
    u(t) after it, and the spikes, as a simulation computed them. The top panel draws each
    step's rise from u(t-1) to v(t), and at a spike the drop by theta down to u(t); the
    bottom panel the input current and the spikes.
    """
    ax_u, ax_z = axes
    steps = len(currents)
    previous = np.r_[theta / 2, after.numpy()[:-1]]
    for t in range(steps):
        ax_u.plot([t, t + 1], [previous[t], float(before[t])], color="C0", lw=1.5,
                  label="integrate: $+z(t)$" if t == 0 else None)  # fmt: skip
        if spikes[t] > 0:
            ax_u.annotate("", xy=(t + 1, float(after[t])), xytext=(t + 1, float(before[t])),
                          arrowprops={"arrowstyle": "->", "color": "C3", "lw": 1.5})  # fmt: skip
    ax_u.plot([], [], color="C3", label=r"fire, reset: $-\theta$")
    ax_u.plot(np.arange(steps + 1), np.r_[theta / 2, after.numpy()], "o", color="C0", ms=3)
    ax_u.axhline(theta, color="k", ls="--", lw=1, label=rf"threshold $\theta$ = {theta:g}")
    ax_u.set(xlabel="time step t", ylabel="membrane potential", xlim=(0, steps + 0.5),
             title=r"$u(0) = \theta / 2$; dots: $u(t)$ after the reset")  # fmt: skip
    ax_u.legend(loc="lower right", fontsize=8)
    t_axis = np.arange(1, steps + 1)
    ax_z.bar(t_axis - 0.5, currents.numpy(), width=0.8, color="C2", alpha=0.6,
             label="input current z(t)")  # fmt: skip
    fired = t_axis[spikes.numpy() > 0]
    ax_z.vlines(fired, 0, theta, color="C3", lw=2, label=r"spike ($\theta$-valued)")
    ax_z.set(xlabel="time step t", xlim=(0, steps + 0.5),
             title=f"{len(fired)} spikes in {steps} steps")  # fmt: skip
    ax_z.legend(loc="upper right", fontsize=8)


def gated_pool_schematic(
    axes: Sequence[Axes], inputs: torch.Tensor, winners: torch.Tensor, output: torch.Tensor
) -> None:
    """Gated max pooling of one window in time: who passes at each step, and why.

    inputs: (T, K) spike trains of the window's K positions; winners: (T,) the position whose
    accumulated input leads at each step; output: (T,) what the pool passed. The left panel
    is a raster (shaded: the leader, filled: a spike that passed), the right one the running
    sums that decide the leader.
    """
    ax_r, ax_s = axes
    steps, k = inputs.shape
    fired = inputs.numpy() > 0
    lead = winners.numpy()
    for t in range(steps):
        ax_r.add_patch(plt.Rectangle((t + 0.5, lead[t] - 0.4), 1, 0.8, color="C1", alpha=0.25,
                                     lw=0))  # fmt: skip
        for i in range(k):
            if fired[t, i]:
                passed = i == lead[t]
                ax_r.plot(t + 1, i, "s" if passed else "x", color="C3" if passed else "0.5",
                          ms=7 if passed else 5)  # fmt: skip
        if output[t] > 0:
            ax_r.plot(t + 1, k + 0.5, "s", color="C3", ms=7)
    ax_r.set(xlim=(0.5, steps + 0.5), ylim=(-0.7, k + 1.1), xlabel="time step t",
             yticks=[*range(k), k + 0.5],
             yticklabels=[f"input {i}" for i in range(k)] + ["pool output"],
             title="shaded: the leader; red: a spike that passes")  # fmt: skip
    sums = np.cumsum(inputs.numpy(), axis=0)
    for i in range(k):
        ax_s.step(np.arange(1, steps + 1), sums[:, i], where="post", label=f"input {i}")
    ax_s.set(xlabel="time step t", ylabel="accumulated input",
             title="the gate: largest sum so far")  # fmt: skip
    ax_s.legend(fontsize=8)


def accuracy_over_time(
    ax: Axes,
    curves: Mapping[str, Mapping[int, float]],
    reference: Mapping[str, float] | None = None,
    percent: bool = True,
    metric: str = "accuracy",
) -> None:
    """Accuracy against T (log2 axis), one line per curve; dashed lines for references.
    ``metric`` names the y axis, for curves of another task metric (mIoU, mAP)."""
    scale = 100 if percent else 1
    for i, (label, curve) in enumerate(curves.items()):
        ts = sorted(int(t) for t in curve)
        ax.plot(ts, [scale * curve[t] if t in curve else scale * curve[str(t)] for t in ts],
                "o-", color=f"C{i}", label=label)  # fmt: skip
    for j, (label, value) in enumerate((reference or {}).items()):
        ax.axhline(scale * value, ls="--", lw=1, color=f"C{len(curves) + j}", label=label)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="time steps T", ylabel=f"{metric} (%)" if percent else metric)
    ax.legend()


def firing_rates(ax: Axes, rates: Mapping[str, float], timesteps: int) -> None:
    """Firing rate per spike source (events per neuron and step over ``timesteps`` steps),
    one horizontal bar per layer, the first layer at the top."""
    names = list(rates)
    ax.barh(range(len(names)), [rates[n] for n in names], color="C0")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel=f"firing rate (spikes per neuron per step, T={timesteps})")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3):
    """A table as rendered Markdown (IPython), floats to ``digits`` significant digits.

    Markdown rather than an image or a pandas frame: it reads well in Jupyter, in the built
    book and in a diff, and needs no extra dependency.
    """
    from IPython.display import Markdown

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.{digits}g}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return Markdown("\n".join(lines))


# --- dense prediction grids (the paper's Figures 4 and 5) --------------------------------


def _label_colours(num_classes: int) -> np.ndarray:
    """(num_classes, 3) RGB in [0, 1]: black background, then a qualitative colour map."""
    colours = plt.get_cmap("tab20" if num_classes > 11 else "tab10")(np.arange(num_classes - 1))
    return np.vstack([np.zeros(3), colours[:, :3]])


def _show_image(ax: Axes, image: torch.Tensor) -> None:
    """(3, H, W) in [0, 1] -> the axes, without ticks."""
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
    ax.set_xticks([]), ax.set_yticks([])


def segmentation_grid(
    images: torch.Tensor,
    truth: torch.Tensor,
    ann: torch.Tensor,
    snn: Mapping[int, torch.Tensor],
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> Figure:
    """Rows of image | ground truth | ANN | SNN at each T, as label maps (paper's Fig. 4).

    ``images`` (N, 3, H, W) in [0, 1]; ``truth``, ``ann`` and every ``snn[T]`` (N, H, W) int.
    """
    num_classes = num_classes or (len(class_names) if class_names else int(truth.max()) + 1)
    colours = _label_colours(num_classes)
    titles = ["image", "ground truth", "ANN", *(f"SNN T={T}" for T in snn)]
    maps = [truth, ann, *snn.values()]
    n = len(images)
    fig, axes = plt.subplots(n, len(titles), figsize=(1.6 * len(titles), 1.6 * n), squeeze=False)
    for row in range(n):
        _show_image(axes[row, 0], images[row])
        for col, labels in enumerate(maps, start=1):
            axes[row, col].imshow(colours[labels[row].cpu().numpy()], interpolation="nearest")
            axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
    for col, title in enumerate(titles):
        axes[0, col].set_title(title, fontsize=9)
    if class_names:
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i]) for i in range(num_classes)]
        fig.legend(handles, class_names, loc="lower center", ncol=min(6, num_classes),
                   fontsize=7, frameon=False)  # fmt: skip
        fig.subplots_adjust(bottom=0.12)
    return fig


def _draw_boxes(
    ax: Axes,
    found: Mapping[str, torch.Tensor],
    colours: np.ndarray,
    class_names: Sequence[str] | None,
    min_score: float,
) -> None:
    scores = found.get("scores", torch.ones(len(found["boxes"])))
    for box, label, score in zip(found["boxes"], found["labels"], scores):
        if score < min_score:
            continue
        x1, y1, x2, y2 = box.tolist()
        colour = colours[int(label) % len(colours)]
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2, ec=colour))
        name = class_names[int(label)] if class_names else str(int(label))
        text = name if "scores" not in found else f"{name} {float(score):.2f}"
        ax.text(x1, y1, text, fontsize=5, color="white", va="bottom",
                bbox={"facecolor": colour, "alpha": 0.8, "pad": 0.5, "lw": 0})  # fmt: skip


def detection_grid(
    images: Sequence[torch.Tensor],
    truth: Sequence[Mapping[str, torch.Tensor]],
    ann: Sequence[Mapping[str, torch.Tensor]],
    snn: Mapping[int, Sequence[Mapping[str, torch.Tensor]]],
    class_names: Sequence[str] | None = None,
    min_score: float = 0.5,
) -> Figure:
    """Rows of ground truth | ANN | SNN at each T, boxes drawn on the image (paper's Fig. 5).

    Detections in torchvision's format; those scoring below ``min_score`` are not drawn.
    """
    colours = _label_colours(max(11, len(class_names or ())))  # label k: colour k, as above
    columns = [("ground truth", truth), ("ANN", ann), *((f"SNN T={T}", d) for T, d in snn.items())]
    n = len(images)
    fig, axes = plt.subplots(n, len(columns), figsize=(1.9 * len(columns), 1.9 * n),
                             squeeze=False)  # fmt: skip
    for row in range(n):
        for col, (_, found) in enumerate(columns):
            _show_image(axes[row, col], images[row])
            _draw_boxes(axes[row, col], found[row], colours, class_names, min_score)
    for col, (title, _) in enumerate(columns):
        axes[0, col].set_title(title, fontsize=9)
    return fig
