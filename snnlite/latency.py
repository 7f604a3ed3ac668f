"""Low latency, still training-free: tune a converted network for a target number of steps.

Why the paper's network needs long T: under a constant input current ``z`` an IF neuron with
``u(0) = theta / 2`` outputs the staircase ``psi_T(z; theta)`` (:func:`snnlite.neurons.rate`),
whose stairs are ``theta / T`` high. Local threshold balancing puts ``theta`` near a high
percentile of ``z`` whatever T is, so at small T most activations fall on the first stair or
two: the quantisation error, not the clipping error LTB minimises, dominates.

:func:`tune_for_latency` corrects a converted network for a target T in three inference-only
parts, each optional (forward passes and closed-form updates; no gradient, no training):

1. **T-aware thresholds.** Each site's (channel's) threshold minimises the error of the
   neuron's quantised rate against the original activation over calibration activations,
   ``theta*_T = argmin_theta E[(psi_T(z; theta) - a(z))^2]`` (``a`` = ReLU or ReLU6), site by
   site in execution order, so each site sees its input as the thresholds above it make it.
   The objective is piecewise smooth in theta: a grid over fractions of the largest
   activation finds the basin, a golden-section search refines it (:func:`t_aware_threshold`).
2. **Mean-error corrections**, site by site in execution order: the mean error of the SNN's
   rate at the target T against the clipped ANN's activation on the same images is measured
   per channel and cancelled (:func:`correct_bias`), so the expected error of every site
   vanishes on the calibration images. Either as a constant input current (``"bias"``: the
   training-free "light" calibration of Li et al., ICML 2021), which is right for one T only,
   or as a charge added to the initial membrane potential (``"potential"``, the default),
   whose effect on the mean rate falls as 1/T like the errors it cancels (the quantisation
   error and the charge that deep layers miss while spikes travel up the network).
3. **The readout delay** that serves each T best: among the possible delays, the one whose
   readout is closest (mean squared error) to the clipped ANN's output on the calibration
   images (:func:`choose_delays`), for T = 4, 8, ..., 64 and the target, all read from one
   simulation; ``delay="auto"`` then follows this schedule. Labels are never needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map
from tqdm.auto import tqdm

from snnlite.graph import activation_sites
from snnlite.network import SpikingNetwork, readout_start
from snnlite.neurons import broadcast_threshold

__all__ = [
    "LATENCY_PARTS",
    "PARTS",
    "LatencyParts",
    "ReadoutFit",
    "latency_parts_of",
    "check_target",
    "choose_delay",
    "choose_delays",
    "correction_groups",
    "correction_samples",
    "delay_grid",
    "correct_bias",
    "quantisation_objective",
    "site_errors",
    "t_aware_threshold",
    "tune_for_latency",
    "tune_thresholds",
]

TUNING_SAMPLES = 512  # calibration images the tuning sees (one tensor)
VALUES_PER_CHANNEL = 2**16  # activations kept per threshold for its 1-D search
GRID_POINTS = 128  # fractions of the largest activation tried before refining
BASINS = 4  # best grid points refined (the objective has several local minima)
BIAS_ROUNDS = 2  # Newton steps per site of the bias correction
DELAY_SAMPLES = 128  # calibration images the delay schedule is chosen on (the first ones)
CORRECTION_STEPS = 4096  # images x T simulated per site and round by the corrections
MIN_CORRECTION_SAMPLES = 64
CORRECTION_GROUPS = 8  # simulations per round of the corrections, at most (see correct_bias)
RATE_BYTES = 2**30  # site rates held at once by the corrections (images go in slices)
MIN_SLOPE = 0.1  # the smallest slope d(mean rate)/d(bias) a Newton step assumes
BLOCK_ELEMENTS = 2**23  # values evaluated at once by the objective (memory bound)
SIGNIFICANCE_Z = 2.0  # standard deviations by which a correction may change more decisions
REFINE_STEPS = 24  # golden-section steps: the bracket shrinks to 0.618**24 ~ 1e-5 of its width


@dataclass(frozen=True)
class LatencyParts:
    """Which parts of the low-latency tuning run (see :func:`tune_for_latency`)."""

    thresholds: bool = True
    bias: bool = False
    potential: bool = True
    delay: bool = True


PARTS = ("thresholds", "bias", "potential", "delay")  # every part, in LatencyParts' order
LATENCY_PARTS = ("thresholds", "potential", "delay")  # the default: what pays (measured)


def latency_parts_of(names: Collection[str]) -> LatencyParts:
    """``LatencyParts`` from part names (any of ``PARTS``); unknown names refused."""
    if isinstance(names, str):
        names = (names,)
    unknown = sorted(set(names) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown latency part(s) {unknown}: choose from {PARTS}")
    return LatencyParts(*(part in names for part in PARTS))


def check_target(timesteps: object) -> int:
    """A target number of time steps: a positive int (numpy ints accepted), else ValueError."""
    if isinstance(timesteps, bool) or not hasattr(timesteps, "__index__"):
        raise ValueError(f"target_timesteps must be a positive integer, got {timesteps!r}")
    value = timesteps.__index__()  # type: ignore[attr-defined]
    if value <= 0:
        raise ValueError(f"target_timesteps must be a positive integer, got {timesteps!r}")
    return value


# --- 1. T-aware thresholds -------------------------------------------------------------------


class _StairObjective:
    """``sum_i (psi_T(z_i; theta) - a(z_i))^2`` per row of ``z`` for any candidate thresholds,
    from the sorted row and prefix sums, in O(T log n) per candidate instead of O(n).

    ``psi_T`` is a staircase: ``z`` lands on stair k (output ``k theta / T``) when
    ``(k - 1/2) theta / T <= z < (k + 1/2) theta / T`` (stair T takes everything above). With
    the row sorted, each stair is a run of consecutive values found by binary search, and
    for a run with count n_k and sums S_k of ``a`` the error is
    ``sum a^2 - 2 sum_k v_k S_k + sum_k v_k^2 n_k`` (``v_k = k theta / T``); ``a`` is monotone
    in ``z``, so its prefix sums follow the same order. Sums in float64.
    """

    def __init__(self, z: Tensor, timesteps: int, cap: float = math.inf) -> None:
        self.timesteps = timesteps
        self.sorted = z.sort(dim=1).values.contiguous()  # (C, n)
        target = self.sorted.clamp(min=0, max=cap).double()  # a(z), ascending too
        zero = torch.zeros(z.shape[0], 1, dtype=torch.float64, device=z.device)
        self.sum_a = torch.cat([zero, target.cumsum(dim=1)], dim=1)  # (C, n + 1)
        self.total_square = target.square().sum(dim=1)  # (C,)

    def __call__(self, thresholds: Tensor) -> Tensor:
        """(C, G) candidate thresholds -> (C, G) float64 sums of squared errors."""
        rows, n = self.sorted.shape
        T = self.timesteps
        stairs = torch.arange(1, T + 1, dtype=torch.float64, device=thresholds.device)
        per_block = max(1, BLOCK_ELEMENTS // max(1, rows * T))
        errors = []
        for block in thresholds.split(per_block, dim=1):  # (C, g)
            theta = block.double().clamp(min=0)[:, :, None]  # (C, g, 1)
            bounds = ((stairs - 0.5) * theta / T).to(self.sorted.dtype)  # (C, g, T)
            starts = torch.searchsorted(self.sorted, bounds.reshape(rows, -1))  # first z >= b
            starts = starts.view(rows, block.shape[1], T)  # where stairs 1..T begin
            ends = torch.cat([starts[:, :, 1:], torch.full_like(starts[:, :, :1], n)], dim=2)
            count = (ends - starts).double()
            total = self.sum_a.gather(1, ends.view(rows, -1))
            total = total - self.sum_a.gather(1, starts.view(rows, -1))  # S_k: (C, g * T)
            value = stairs * theta / T  # (C, g, T): the output on each stair
            cross = (value * total.view_as(value)).sum(dim=2)
            square = (value.square() * count).sum(dim=2)
            error = self.total_square[:, None] - 2 * cross + square
            silent = block <= 0  # theta = 0: the neuron never fires
            errors.append(torch.where(silent, self.total_square[:, None], error.clamp(min=0)))
        return torch.cat(errors, dim=1)


def quantisation_objective(
    z: Tensor, thresholds: Tensor, timesteps: int, cap: float = math.inf
) -> Tensor:
    """``sum_i (psi_T(z_i; theta) - a(z_i))^2`` for each row of ``z`` and candidate threshold.

    ``z``: (C, n) activations, one row per threshold; ``thresholds``: (C, G) candidates.
    Returns (C, G), float64. Sums, not means: rows share n, so the argmin is the same.
    Computed stair by stair on the sorted row (:class:`_StairObjective`); equal to the
    direct sum over ``psi_T`` (:func:`snnlite.neurons.rate`) up to rounding (tested).
    """
    return _StairObjective(z, timesteps, cap)(thresholds)


def t_aware_threshold(
    z: Tensor,
    timesteps: int,
    cap: float = math.inf,
    *,
    grid: int = GRID_POINTS,
    basins: int = BASINS,
    refine: int = REFINE_STEPS,
) -> Tensor:
    """Per row of ``z`` (C, n), the threshold minimising :func:`quantisation_objective`.

    Candidates are ``k / grid`` of the row's largest activation (capped), k = 1..grid. The
    objective is piecewise smooth with several local minima (one per stair a large activation
    can land on), so the ``basins`` best grid points each bracket a golden-section search
    between their grid neighbours, and the best point found anywhere is kept. A row with no
    positive value gets 0 (a silent neuron). Returns (C,) in z's dtype.
    """
    top = z.amax(dim=1).clamp(min=0, max=cap)  # (C,)
    fractions = torch.arange(1, grid + 1, dtype=z.dtype, device=z.device) / grid
    candidates = top[:, None] * fractions  # (C, G)
    objective = _StairObjective(z, timesteps, cap)  # sorted once, any candidates after
    errors = objective(candidates)
    best = errors.topk(min(basins, grid), dim=1, largest=False).indices  # (C, k)
    low = top[:, None] * (best.to(z.dtype) / grid)  # the grid point below (0 below the first)
    high = top[:, None] * ((best + 2).clamp(max=grid).to(z.dtype) / grid)
    golden = (math.sqrt(5) - 1) / 2

    inner_low, inner_high = high - golden * (high - low), low + golden * (high - low)
    f_low, f_high = objective(inner_low), objective(inner_high)
    for _ in range(refine):
        left = f_low <= f_high  # the minimum lies in [low, inner_high]
        high = torch.where(left, inner_high, high)
        low = torch.where(left, low, inner_low)
        new_low = torch.where(left, high - golden * (high - low), inner_high)
        new_high = torch.where(left, inner_low, low + golden * (high - low))
        # One new evaluation per bracket: the inner point that stays inside is reused.
        fresh = objective(torch.where(left, new_low, new_high))
        f_low, f_high = (torch.where(left, fresh, f_high), torch.where(left, f_low, fresh))
        inner_low, inner_high = new_low, new_high
    found = torch.cat([candidates, inner_low, inner_high], dim=1)
    found_errors = torch.cat([errors, f_low, f_high], dim=1)
    theta = found.gather(1, found_errors.argmin(dim=1, keepdim=True))[:, 0]
    return torch.where(top > 0, theta, torch.zeros_like(theta))


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the value it wanted is seen."""


def _site_inputs(ann: fx.GraphModule, name: str, inputs: Sequence[Tensor]) -> Tensor:
    """The input current of one site on every batch of ``inputs``, (N, ...); each forward
    pass stops at the site."""
    site = activation_sites(ann)[name]
    seen: list[Tensor] = []

    def grab(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        seen.append(args[0].detach())
        raise _Stop

    handle = site.register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            for x in inputs:
                try:
                    ann(x)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return torch.cat(seen)


def _rows(z: Tensor, channelwise: bool, generator: torch.Generator) -> Tensor:
    """Activations as rows, one per threshold: (C, n) or (1, n), at most VALUES_PER_CHANNEL
    values each (a seeded random sample of positions)."""
    rows = z.transpose(0, 1).reshape(z.shape[1], -1) if channelwise else z.reshape(1, -1)
    if rows.shape[1] > VALUES_PER_CHANNEL:
        pick = torch.randperm(rows.shape[1], generator=generator)[:VALUES_PER_CHANNEL]
        rows = rows[:, pick.to(rows.device)]
    return rows


def tune_thresholds(
    ann: fx.GraphModule,
    inputs: Sequence[Tensor],
    timesteps: int,
    *,
    seed: int = 0,
    progress: bool = True,
) -> None:
    """Set every site's threshold to its T-aware value, site by site in execution order
    (each site's input computed with the thresholds already tuned above it)."""
    generator = torch.Generator().manual_seed(seed)
    sites = activation_sites(ann)
    for name, site in tqdm(sites.items(), desc="T-aware thresholds", unit="site",
                           disable=not progress, leave=False):  # fmt: skip
        z = _site_inputs(ann, name, inputs)
        channelwise = site.threshold.dim() == 1
        theta = t_aware_threshold(_rows(z.float(), channelwise, generator), timesteps, site.cap)
        site.threshold = (theta if channelwise else theta[0]).to(site.threshold)


# --- 2. bias correction ----------------------------------------------------------------------


def _reduce_dims(value: Tensor, channelwise: bool) -> tuple[int, ...]:
    """Dims averaged into one threshold's statistic: all but the channel dim, or all."""
    return (0, *range(2, value.dim())) if channelwise else tuple(range(value.dim()))


def _site_statistics(
    ann: fx.GraphModule, inputs: Sequence[Tensor]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per site and threshold entry, over the inputs: the mean clipped-ANN activation, and
    the fraction of activations strictly between 0 and theta (where a small change of the
    input current moves the output one for one: the slope a bias correction sees)."""
    sums: dict[str, Tensor] = {}
    linear: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    sites = activation_sites(ann)

    def record(name: str, site: nn.Module) -> Callable:
        channelwise = site.threshold.dim() == 1

        def hook(_module: nn.Module, _args: tuple, out: Tensor) -> None:
            dims = _reduce_dims(out, channelwise)
            theta = broadcast_threshold(site.threshold.to(out.dtype), out.dim())
            inside = ((out > 0) & (out < theta)).to(out.dtype)
            total = out.sum(dim=dims, dtype=torch.float64)
            moving = inside.sum(dim=dims, dtype=torch.float64)
            sums[name] = sums[name] + total if name in sums else total
            linear[name] = linear[name] + moving if name in linear else moving
            counts[name] = counts.get(name, 0) + out.numel() // max(1, total.numel())

        return hook

    handles = [site.register_forward_hook(record(name, site)) for name, site in sites.items()]
    try:
        with torch.no_grad():
            for x in inputs:
                ann(x)
    finally:
        for handle in handles:
            handle.remove()
    means = {name: sums[name] / counts[name] for name in sums}
    slopes = {name: linear[name] / counts[name] for name in linear}
    return means, slopes


def site_errors(
    snn: SpikingNetwork, inputs: Tensor, timesteps: int, start: int = 0
) -> dict[str, Tensor]:
    """``{site: E[rate - a]}`` per threshold entry: the SNN's mean rate over the window
    ``start < t <= T`` against the clipped ANN's mean activation, on ``inputs``."""
    means, _ = _site_statistics(snn.ann, [inputs])
    rates = _mean_rates(snn, inputs, timesteps, start, list(activation_sites(snn.ann)))
    return {name: (rates[name] - means[name]).float() for name in rates}


def _site_shapes(ann: fx.GraphModule, sample: Tensor) -> dict[str, tuple[int, ...]]:
    """Each site's output shape for one sample (one clipped-ANN pass)."""
    shapes: dict[str, tuple[int, ...]] = {}
    sites = activation_sites(ann)

    def record(name: str) -> Callable:
        def hook(_module: nn.Module, _args: tuple, out: Tensor) -> None:
            shapes[name] = tuple(out.shape[1:])

        return hook

    handles = [site.register_forward_hook(record(name)) for name, site in sites.items()]
    try:
        with torch.no_grad():
            ann(sample)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _mean_rates(
    snn: SpikingNetwork, inputs: Tensor, timesteps: int, start: int, group: Sequence[str]
) -> dict[str, Tensor]:
    """``{site: E[rate]}`` per threshold entry (float64) for the sites of ``group``, from one
    simulation up to the group's last site; the images go in slices whose rates fit in
    ``RATE_BYTES`` (the rates of every site of a 224 px network are ~20 MB per image)."""
    sites = activation_sites(snn.ann)
    shapes = _site_shapes(snn.ann, inputs[:1])
    per_sample = 4 * sum(math.prod(shapes[name]) for name in group)
    step = max(1, RATE_BYTES // max(1, per_sample))
    means: dict[str, list[Tensor]] = {name: [] for name in group}
    parts = torch.split(inputs, step)
    for part in parts:
        rates = snn.site_rates(part, timesteps, start, sites=group)
        for name in group:
            dims = _reduce_dims(rates[name], sites[name].threshold.dim() == 1)
            means[name].append(rates[name].mean(dim=dims, dtype=torch.float64))
    if len(parts) == 1:
        return {name: values[0] for name, values in means.items()}
    weights = [len(part) / len(inputs) for part in parts]
    return {name: sum(w * m for w, m in zip(weights, values)) for name, values in means.items()}


def correction_groups(names: Sequence[str], groups: int = CORRECTION_GROUPS) -> list[list[str]]:
    """``names`` (sites in execution order) cut into at most ``groups`` consecutive runs of
    near-equal length; with ``groups >= len(names)`` every site is its own group."""
    count = max(1, min(groups, len(names)))
    bounds = [round(k * len(names) / count) for k in range(count + 1)]
    return [list(names[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]


def correct_bias(
    snn: SpikingNetwork,
    inputs: Tensor,
    timesteps: int,
    start: int = 0,
    *,
    rounds: int = BIAS_ROUNDS,
    into: str = "bias",
    groups: int = CORRECTION_GROUPS,
    progress: bool = True,
) -> dict[str, Tensor]:
    """Zero each site's mean error at T on ``inputs``, in execution order.

    For site l, ``mu_l = E[rate_l - a_l]`` per channel: the SNN's rate over the readout
    window ``start < t <= T`` (with the corrections already made above l) against the clipped
    ANN's activation on the same images. A constant current ``b_l`` added to the neuron's
    input every step moves the mean rate only where the neuron is neither silent nor
    saturated, so each round takes a Newton step ``b_l -= mu_l / s_l`` with ``s_l`` the
    fraction of the channel's clipped-ANN activations strictly inside ``(0, theta)``
    (at least ``MIN_SLOPE``).

    Site by site, each correction needs its own simulation up to that site: a cost that
    grows with the square of the depth (35 sites in MobileNetV2). So the sites are cut into
    at most ``groups`` consecutive groups (:func:`correction_groups`); the sites of a group
    are measured in one simulation and corrected together, each group after the groups
    above it. A site's error then includes what the uncorrected sites of its own group above
    it pass down, which the next round sees corrected. With no more sites than groups (the
    zoo's classifiers) it is the exact site-by-site correction.

    Returns the errors measured before correction ``{site: mu}``.
    """
    sites = activation_sites(snn.ann)
    targets, slopes = _site_statistics(snn.ann, [inputs])
    errors: dict[str, Tensor] = {}
    for group in tqdm(correction_groups(list(sites), groups), desc="mean-error correction",
                      unit="group", disable=not progress, leave=False):  # fmt: skip
        for round_ in range(rounds):
            means = _mean_rates(snn, inputs, timesteps, start, group)
            for name in group:
                site = sites[name]
                mu = means[name] - targets[name]
                if round_ == 0:
                    errors[name] = mu.float()
                step = -(mu / slopes[name].clamp(min=MIN_SLOPE)).to(site.threshold.dtype)
                if into == "bias":
                    site.bias = step if site.bias is None else site.bias + step
                else:  # a charge at t = 0 moves the window's mean rate by charge / (T - start)
                    step = step * (timesteps - start)
                    site.charge = step if site.charge is None else site.charge + step
    return errors


# --- 3. the readout delay --------------------------------------------------------------------


def _squared_error(readout: object, reference: object) -> float:
    """Summed squared difference between two network outputs (any nesting of tensors)."""
    got, _ = tree_flatten(readout)
    want, _ = tree_flatten(reference)
    return sum(float((g.double() - w.double()).square().sum()) for g, w in zip(got, want))


def _class_scores(output: object) -> Tensor | None:
    """The class-score tensor of a network output, (N, C) or (N, C, H, W) with C >= 2: the
    output itself, its only tensor (a segmentation model's ``{"out": ...}``), or its
    ``"out"`` entry (torchvision's segmentation models with an auxiliary head); else None."""
    if isinstance(output, Mapping) and isinstance(output.get("out"), Tensor):
        output = output["out"]
    leaves, _ = tree_flatten(output)
    if len(leaves) != 1 or not isinstance(leaves[0], Tensor):
        return None
    scores = leaves[0]
    return scores if scores.dim() >= 2 and scores.shape[1] >= 2 else None


def _changed_decisions(
    readout: object, reference: object, decided: Tensor | None = None
) -> Tensor | None:
    """Which of the reference's class decisions the readout changes (a flat bool tensor, one
    entry per image or pixel), or None where the output has no class decisions.

    A network whose output is class scores (:func:`_class_scores`: a classifier, a
    segmentation model) decides by their argmax over C: per image or per pixel. The mean
    squared error weighs every score alike, so it can fall while more decisions change (the
    charges on DeepLabV3 at T = 16: the readout's error against the clipped ANN fell from
    1.22 to 0.95 while the share of its pixel decisions that differ rose from 4% to 11%).
    Detection heads (several tensors: scores read through a sigmoid, and boxes) have no
    such argmax: None. ``decided``: the reference's decisions, if already known.
    """
    got, want = _class_scores(readout), _class_scores(reference)
    if got is None or want is None:
        return None
    decided = want.argmax(1) if decided is None else decided
    return (got.argmax(1) != decided).flatten()


def choose_delay(snn: SpikingNetwork, inputs: Tensor, timesteps: int) -> int:
    """The delay (in steps) whose readout at T is closest to the clipped ANN's output.

    Every delay ``0 .. T - MIN_WINDOW`` is read from one simulation. Ties go to the shorter
    delay.
    """
    return choose_delays(snn, inputs, [timesteps])[timesteps]


def choose_delays(snn: SpikingNetwork, inputs: Tensor, timesteps: Sequence[int]) -> dict[int, int]:
    """:func:`choose_delay` for several T at once, all read from ONE simulation to max(T).

    The best delay grows with T (a longer run can afford to skip more of its transient), so
    a network read out at several T is given one delay per T: ``{T: delay}``, the
    ``delay_schedule`` that ``delay="auto"`` follows (:meth:`SpikingNetwork.auto_delay`).
    """
    return {T: fit.delay for T, fit in _best_delays(snn, inputs, timesteps).items()}


@dataclass(frozen=True)
class ReadoutFit:
    """How close a network's readout at one T comes to the clipped ANN's output, at the
    delay chosen for it: ``error`` (mean squared) and ``changed``, which class decisions
    differ (see :func:`_changed_decisions`; None without class decisions or when not asked
    for)."""

    delay: int
    error: float
    changed: Tensor | None = None

    def no_worse_than(self, other: ReadoutFit) -> bool:
        """The error is not larger, and the class decisions (where both have them, on the
        same images) do not change more often than chance allows.

        McNemar's test on the paired decisions: of those that only one of the two readouts
        changes, ``b`` only this one and ``c`` only the other; with no real difference b
        and c split evenly, so this readout is worse only if ``b - c`` exceeds
        ``SIGNIFICANCE_Z`` standard deviations ``sqrt(b + c)``. On a classifier's 128
        calibration images one image more or less is noise, not a verdict.
        """
        if self.error > other.error:
            return False
        if self.changed is None or other.changed is None:
            return True
        only_self = int((self.changed & ~other.changed).sum())
        only_other = int((other.changed & ~self.changed).sum())
        return only_self - only_other <= SIGNIFICANCE_Z * math.sqrt(only_self + only_other)


def _best_delays(
    snn: SpikingNetwork, inputs: Tensor, timesteps: Sequence[int], decisions: bool = False
) -> dict[int, ReadoutFit]:
    """``{T: fit}``: each T's delay with the smallest readout error (mean squared error
    against the clipped ANN's output; ties to the shorter delay) and that error; with
    ``decisions``, also which class decisions that readout changes (they are held for every
    candidate delay until the best is known: ask only for a few T)."""
    steps = sorted(set(timesteps))
    candidates = {T: sorted({readout_start(T, d) for d in range(T)}) for T in steps}
    every = sorted({d for ds in candidates.values() for d in ds})
    pairs = [(T, d) for T in steps for d in candidates[T]]
    # Reduced tile by tile as the simulation yields them: only one tile's readouts (a few
    # images x every window) are ever held, however large the output (a segmentation map at
    # 96 px is 0.8 MB per image and window, and the schedule reads ~120 windows).
    squares = dict.fromkeys(pairs, 0.0)  # summed squared errors
    changed: dict[tuple[int, int], list[Tensor | None]] = {pair: [] for pair in pairs}
    with torch.no_grad():  # one pass: the ANN is fastest on many images at once
        whole = snn.ann(inputs)
    size = sum(leaf.numel() for leaf in tree_flatten(whole)[0])  # output elements
    for rows, readouts in snn.simulate_tiles(inputs, steps, delay=every, progress=False):
        reference = tree_map(lambda leaf, rows=rows: leaf[rows], whole)
        scores = _class_scores(reference) if decisions else None
        decided = None if scores is None else scores.argmax(1)  # once for every window
        for pair in pairs:
            squares[pair] += _squared_error(readouts[pair], reference)
            if decisions:
                changed[pair].append(_changed_decisions(readouts[pair], reference, decided))
    errors = {pair: total / max(1, size) for pair, total in squares.items()}
    best = {T: min(candidates[T], key=lambda d, T=T: (errors[(T, d)], d)) for T in steps}
    fits = {}
    for T, delay in best.items():
        masks = changed[(T, delay)]
        mask = torch.cat(masks) if masks and all(m is not None for m in masks) else None
        fits[T] = ReadoutFit(delay, errors[(T, delay)], mask)  # type: ignore[arg-type]
    return fits


def _readout_fit(snn: SpikingNetwork, inputs: Tensor, timesteps: int) -> ReadoutFit:
    """The readout's fit at one T, with its best delay and its changed class decisions."""
    return _best_delays(snn, inputs, [timesteps], decisions=True)[timesteps]


def correction_samples(timesteps: int) -> int:
    """Images the mean-error corrections simulate at a target T: ``CORRECTION_STEPS / T``,
    at least ``MIN_CORRECTION_SAMPLES``.

    Their cost is images x T simulated steps per site and round, so a fixed budget keeps the
    tuning's cost flat in T. A long target needs fewer images for the same precision: the
    rate it measures is averaged over more steps, and its mean error is smaller to begin
    with.
    """
    return max(MIN_CORRECTION_SAMPLES, CORRECTION_STEPS // timesteps)


def delay_grid(target: int) -> list[int]:
    """The T's a low-latency network's delay is chosen for: powers of two from 4 to 64, and
    the target itself (beyond the grid, :meth:`SpikingNetwork.auto_delay` keeps the
    fraction of the run that the largest T's delay skips)."""
    return sorted({4, 8, 16, 32, 64, target})


# --- all parts -------------------------------------------------------------------------------


def tune_for_latency(
    snn: SpikingNetwork,
    inputs: Tensor,
    timesteps: int,
    parts: LatencyParts = LatencyParts(),
    *,
    progress: bool = True,
) -> SpikingNetwork:
    """Tune a converted network for ``timesteps`` in place (see the module docstring).

    ``inputs``: calibration images as one (N, ...) tensor (a few hundred are enough). In
    order: the thresholds (they change the clipped ANN that everything after compares with);
    the bias correction, a constant current per channel calibrated for the readout window of
    the delay chosen for T (Li et al.'s correction); the potential correction, a charge per
    channel added to the initial membrane potential, calibrated for the window that starts at
    t = 0 (its effect on the mean rate falls as 1/T, like the transient and quantisation
    errors it cancels, so one correction serves every T from the target on), kept only if
    it brings the readout at T (each with its best delay) closer to the clipped ANN's output
    on the calibration images without changing more of its class decisions than chance
    allows (:meth:`ReadoutFit.no_worse_than`; with the ``"delay"`` part); and
    last the delay that serves each T best with the corrections in place (``snn.delay_schedule``;
    ``snn.delay_estimate`` is the target's). The corrections simulate the first
    :func:`correction_samples` images, the delay the first ``DELAY_SAMPLES``.
    """
    timesteps = check_target(timesteps)
    snn.delay_schedule = None  # chosen for the network as it was; re-chosen below if asked
    if parts.thresholds:
        # A burst neuron's rate over T steps is the binary neuron's over B T (spikes_per_step B).
        stairs = timesteps * snn.spikes_per_step
        tune_thresholds(snn.ann, list(torch.split(inputs, 128)), stairs, progress=progress)
        snn.delay_estimate = snn.estimate_delay(inputs[:256])
    few = inputs[: correction_samples(timesteps)]  # a fixed budget of simulated steps
    if parts.bias:
        if parts.delay:
            snn.delay_estimate = float(choose_delay(snn, few, timesteps))
        start = readout_start(timesteps, snn.delay_estimate or 0)
        correct_bias(snn, few, timesteps, start, progress=progress)
    if parts.potential:
        probe = inputs[:DELAY_SAMPLES]
        if parts.delay:
            without = _readout_fit(snn, probe, timesteps)
        correct_bias(snn, few, timesteps, 0, into="charge", progress=progress)
        snn.delay_estimate = 0.0  # the window the charge was calibrated for
        if parts.delay and not _readout_fit(snn, probe, timesteps).no_worse_than(without):
            # Kept only where it pays: the charges made the readout at T (each with its
            # best delay) further from the clipped ANN's output on the calibration images,
            # or changed more of its class decisions than chance allows.
            for site in activation_sites(snn.ann).values():
                site.charge = None
    if parts.delay:
        schedule = choose_delays(snn, inputs[:DELAY_SAMPLES], delay_grid(timesteps))
        snn.delay_schedule = schedule
        snn.delay_estimate = float(schedule[timesteps])
    return snn
