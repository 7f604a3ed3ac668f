"""``convert``: a pretrained CNN and a few calibration batches in, a spiking network out.

The converter only wires things together: :mod:`snnlite.graph` prepares the graph,
a recipe from :mod:`snnlite.recipes` stands at each activation site while the calibration
batches run, and :class:`snnlite.network.SpikingNetwork` takes the thresholds. No training.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Collection, Iterable, Iterator
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn
from tqdm.auto import tqdm

from snnlite import distributed
from snnlite.checks import check_eval_mode, check_input, read_calibration, reference_of
from snnlite.graph import SITES, activation_sites, frozen_group_norms, prepare
from snnlite.latency import (
    LATENCY_PARTS,
    TUNING_SAMPLES,
    check_target,
    latency_parts_of,
    tune_for_latency,
)
from snnlite.network import MAX_POOL_MODES, MaxPoolMode, SpikingNetwork
from snnlite.neurons import check_catch_up, check_signed_spikes, check_spikes_per_step
from snnlite.recipes import Granularity, ThresholdRecipe, make_recipe

__all__ = ["calibrate", "convert"]

METHODS = ("ltb", "max", "robust")
LTB_UPDATES = 600  # default LTB iteration count: about the 99.9th percentile (1 / 2K)
GROUP_NORM_BATCHES = 20  # calibration batches that measure frozen GroupNorm statistics


def convert(
    model: nn.Module,
    calibration: Iterable[Any],
    method: str = "ltb",
    granularity: Granularity = "channel",
    *,
    iterations: int | None = None,
    step_size: float = 1.0,
    percentile: float = 99.9,
    max_pool: MaxPoolMode | None = None,
    keep_analog: Iterable[str] = (),
    group_norm: str = "refuse",
    probe_size: int = 256,
    target_timesteps: int | None = None,
    latency_parts: Collection[str] = LATENCY_PARTS,
    tuning_size: int = TUNING_SAMPLES,
    spikes_per_step: int = 1,
    signed_spikes: bool = False,
    catch_up: int = 1,
    progress: bool = True,
) -> SpikingNetwork:
    """Convert a pretrained CNN into a spiking network, without training.

    Args:
        model: an eval-mode CNN of conv / linear / batch-norm / ReLU-like / pooling / add /
            cat / upsample / flatten layers. It is copied, never modified. A model whose batch
            norms or dropout are in training mode is refused (call ``model.eval()``).
        calibration: an iterable of input batches, or of (input, target) batches, with
            the model's dtype (batches on another device are moved
            to the model's). An error the iterable raises comes back as a
            :class:`snnlite.checks.CalibrationDataError` chained to it.
        method: ``"ltb"`` local threshold balancing, ``"max"`` max-norm, ``"robust"``
            percentile norm.
        granularity: ``"layer"`` (one threshold per site) or ``"channel"`` (per conv channel
            or linear feature).
        iterations: calibration batches to run (one LTB update each); cycles over
            ``calibration`` if it is shorter and can be iterated again, stops early if it is
            longer. Default: ``LTB_UPDATES`` (600) for LTB, one pass for max/robust. For LTB
            the count is a hidden percentile knob: after K updates about 1/(2K) of the
            activations exceed theta, so a handful of batches gives thresholds that clip far
            too much, and reusing them gives the same thresholds as fresh data would.
        step_size: the LTB step ``c`` (1 in the paper; a large one overshoots).
        percentile: for ``"robust"``.
        max_pool: max pools on time-varying inputs: ``"gated"`` (each window passes the input
            of its accumulated-input leader; exact in the limit), ``"cumulative"`` (each
            window passes the increment of its largest accumulated input; exact at every
            step) or ``"current"`` (the paper's per-step pooling). ``None`` (default):
            ``"gated"`` for the paper's pipeline, as the book measures it, and
            ``"cumulative"`` with ``target_timesteps``, where it pays most (see
            :mod:`snnlite.pooling`).
        keep_analog: module or node names to keep analog instead of refusing them.
        group_norm: ``"refuse"`` or ``"freeze"``: fix each GroupNorm call's statistics,
            averaged over the first ``GROUP_NORM_BATCHES`` calibration batches, so that it
            becomes a per-channel affine (see :mod:`snnlite.groupnorm`; it changes the ANN).
        probe_size: samples of the first calibration batch kept to estimate the delay.
        target_timesteps: ``None`` (default) gives the paper's network. A number of time
            steps T tunes the converted network for that latency, still without training
            (:mod:`snnlite.latency`): T-aware thresholds, a correction of each site's mean
            error at T through its initial membrane potential, and the readout delay that
            serves T best.
        latency_parts: which of ``"thresholds"``, ``"bias"``, ``"potential"`` and
            ``"delay"`` the tuning for ``target_timesteps`` runs (default: all but
            ``"bias"``, a constant-current correction that is right for one T only).
        tuning_size: calibration images (the first ones) the latency tuning uses.
        spikes_per_step: 1 (default): binary spikes, at most one per neuron and step, as in
            the paper. B > 1: **burst neurons**, up to B spikes of theta / B per step
            (:func:`snnlite.neurons.burst_integrate_and_fire`): log2(B + 1) bits per step,
            so a run of T steps carries what a binary run of B T steps does, in T steps.
            Every spike of a burst is counted as an event and in the synaptic operations.
            A separate option: compare its T with binary spikes only with the bits stated.
        signed_spikes: ``False`` (default): the paper's neurons, whose spikes are final.
            ``True``: **signed spikes with memory**
            (:func:`snnlite.neurons.signed_integrate_and_fire`): a neuron may also send a
            spike of -theta to take back one it sent before, so that its spikes so far are
            always its input so far, rounded. Deep networks settle in far fewer steps; a
            step carries one of three values, log2(3) = 1.58 bits, and every spike of
            either sign is an event and costs its synaptic operations. A separate option,
            like bursts. Both together: signed spikes of theta / B with memory, up to B per
            step (times ``catch_up``), so a run of T steps rounds every activation to B T
            levels; log2(2 B ``catch_up`` + 1) bits per step
            (:attr:`SpikingNetwork.bits_per_step`).
        catch_up: with ``signed_spikes``, the most spikes a neuron may send (or take back)
            in one step: 1 (default), or B > 1 to **catch up** when its input came faster
            than theta per step, never more than t spikes in t steps (so the rate is still
            clipped at theta). One spike per step makes a deep layer lag behind its input
            (what is still in the membrane at the end is lost); with B the network read
            out at T computes :meth:`SpikingNetwork.quantised_ann` as long as no step brings
            a neuron more than B theta. log2(2 B + 1) bits per step; each spike is an event.
        progress: show tqdm progress bars (calibration and simulation).

    Under an initialised process group (``torchrun``; see :mod:`snnlite.distributed`) each
    rank passes its own share of the calibration data, e.g. through a
    :class:`~snnlite.distributed.BatchShardSampler`, and every rank returns the same
    network: the one a single process would build from the global batches (step k = every
    rank's k-th batch). The threshold statistics are combined over the ranks at every step
    (:func:`calibrate`). The data-dependent steps after it (the delay estimate, the
    low-latency tuning) run on every rank on the same global probe samples, so that no rank
    waits idle for another past a collective's timeout, and rank 0's outcome (thresholds,
    corrections, delays) is then broadcast, so that the ranks agree bit for bit.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_eval_mode(model)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if granularity not in ("layer", "channel"):
        raise ValueError(f"granularity must be 'layer' or 'channel', got {granularity!r}")
    if iterations is not None and (isinstance(iterations, bool) or iterations <= 0):
        raise ValueError(f"iterations must be a positive int or None, got {iterations!r}")
    spikes_per_step = check_spikes_per_step(spikes_per_step)
    signed_spikes = check_signed_spikes(signed_spikes)
    catch_up = check_catch_up(catch_up, signed_spikes)
    if max_pool is not None and max_pool not in MAX_POOL_MODES:
        raise ValueError(f"max_pool must be one of {MAX_POOL_MODES} or None, got {max_pool!r}")
    parts = None
    if target_timesteps is not None:
        target_timesteps = check_target(target_timesteps)
        parts = latency_parts_of(latency_parts)
        if isinstance(tuning_size, bool) or not isinstance(tuning_size, int) or tuning_size < 1:
            raise ValueError(f"tuning_size must be a positive int, got {tuning_size!r}")

    if iterations is None and method == "ltb":
        iterations = LTB_UPDATES
    ann = prepare(model, keep_analog=keep_analog, group_norm=group_norm)
    sites = activation_sites(ann)
    if not sites:
        raise ValueError(
            "the model has no ReLU-like activation that feeds a conv or linear layer: nothing "
            "to convert (activations at the output stay analog)"
        )
    if frozen_group_norms(ann):
        if iter(calibration) is calibration:  # a one-shot iterator: keep its batches
            calibration = list(calibration)
        measure_group_norms(ann, calibration, progress=progress)
    recipes = {
        name: make_recipe(
            method, granularity, site.cap, step_size=step_size, percentile=percentile
        )  # fmt: skip
        for name, site in sites.items()
    }
    keep = tuning_size if parts is not None else probe_size
    probe = calibrate(ann, recipes, calibration, iterations=iterations, progress=progress,
                      keep=keep)  # fmt: skip
    for name, site in sites.items():
        site.threshold = recipes[name].threshold().to(site.threshold.device)
    if max_pool is None:
        max_pool = "gated" if parts is None else "cumulative"
    snn = SpikingNetwork(ann, max_pool=max_pool, progress=progress,
                         spikes_per_step=spikes_per_step, signed_spikes=signed_spikes,
                         catch_up=catch_up)  # fmt: skip
    snn.sample_shape = tuple(probe.shape[1:])
    snn.delay_estimate = snn.estimate_delay(probe[:probe_size])
    if parts is not None:
        tune_for_latency(snn, probe[:tuning_size], target_timesteps, parts, progress=progress)
    _agree(snn)
    return snn


def _agree(snn: SpikingNetwork) -> None:
    """Rank 0's thresholds, corrections and delays on every rank (nothing when alone)."""
    if distributed.world_size() == 1:
        return
    sites = activation_sites(snn.ann)

    def cpu(value: Tensor | None) -> Tensor | None:  # pickled tensors keep their device
        return None if value is None else value.detach().cpu()

    state = {name: (cpu(s.threshold), cpu(s.bias), cpu(s.charge)) for name, s in sites.items()}
    state, snn.delay_estimate, snn.delay_schedule = distributed.broadcast_object(
        (state, snn.delay_estimate, snn.delay_schedule)
    )
    for name, (threshold, bias, charge) in state.items():
        site = sites[name]
        device = site.threshold.device
        site.threshold = threshold.to(device)
        site.bias = None if bias is None else bias.to(device)
        site.charge = None if charge is None else charge.to(device)


def calibrate(
    ann: fx.GraphModule,
    recipes: dict[str, ThresholdRecipe],
    calibration: Iterable[Any],
    *,
    iterations: int | None = None,
    progress: bool = True,
    keep: int = 0,
) -> Tensor:
    """Run calibration batches with each site's recipe in its place; return the first batch
    (or, with ``keep``, the first ``keep`` calibration samples, which may span batches).

    The sites are put back afterwards (their thresholds are the caller's to set).

    Under an initialised process group every rank passes its own share of the data and
    step k is the global batch made of every rank's k-th batch, in rank order (see
    :class:`snnlite.distributed.BatchShardSampler`): the recipes combine their statistics
    over the ranks (:mod:`snnlite.recipes`), the run stops for all when any rank runs out of
    batches (with a warning if they disagree), and what is returned is what one process
    reading the global batches would return, the same on every rank.
    """
    container = ann.get_submodule(SITES)
    originals = {name: getattr(container, name) for name in recipes}
    reference = reference_of(ann)
    first: Tensor | None = None
    samples: list[Tensor] = []
    kept = 0
    try:
        for name, recipe in recipes.items():
            setattr(container, name, recipe)
        total = iterations if iterations is not None else _length(calibration)
        batches = tqdm(_in_step(_batches(calibration, iterations)), total=total, desc="calibrate",
                       unit="batch", disable=not progress, leave=False)  # fmt: skip
        with torch.no_grad():
            for index, batch in enumerate(batches):
                x = _input_of(batch, index, reference)
                if first is None:
                    first = x
                if kept < keep and x.shape[1:] == first.shape[1:]:
                    samples.append(x[: keep - kept])
                    kept += len(samples[-1])
                elif kept < keep and distributed.world_size() > 1:
                    samples.append(first[:0])  # this step adds none (kept per step)
                try:  # fully convolutional models may take batches of different sizes
                    ann(x)
                except torch.OutOfMemoryError:
                    raise
                except (RuntimeError, ValueError, IndexError) as error:
                    other = x.shape[1:] != first.shape[1:]
                    raise ValueError(
                        f"the model cannot run on calibration batch {index} of shape "
                        f"{tuple(x.shape)}"
                        + (
                            f" (batch 0 had samples of shape {tuple(first.shape[1:])})"
                            if other
                            else ""
                        )
                        + f": pass batches (N, ...) of the model's input shape ({error})"
                    ) from error
    finally:
        for name, site in originals.items():
            setattr(container, name, site)
    if first is None:
        raise ValueError("calibration data is empty: pass an iterable of input batches")
    if distributed.world_size() > 1:
        return _global_samples(first, samples, keep)
    if keep > len(first) and len(samples) > 1:
        return torch.cat(samples)  # all of batch 0's sample shape
    return first


def _in_step(batches: Iterator[Any]) -> Iterator[Any]:
    """``batches`` while every rank still has one (every batch when alone): each step of a
    distributed calibration is a collective, which all ranks must enter together."""
    if distributed.world_size() == 1:
        yield from batches
        return
    for step in itertools.count():
        batch = next(batches, _END)
        ready = distributed.count_ranks(batch is not _END)
        if ready < distributed.world_size():
            if ready and distributed.rank() == 0:
                warnings.warn(
                    f"the processes have different numbers of calibration batches: all "
                    f"stopped after {step}, when {distributed.world_size() - ready} ran out",
                    stacklevel=4,
                )
            return
        yield batch


_END = object()


def _global_samples(first: Tensor, samples: list[Tensor], keep: int) -> Tensor:
    """:func:`calibrate`'s return value for the global batches, from every rank's ``first``
    batch and kept ``samples`` (one tensor per step): the global first batch, or the first
    ``keep`` samples of the global order (step k of rank 0, of rank 1, ..., then step
    k + 1) when they span more than one global batch. Each rank sends only the samples of
    its own that this prefix holds."""
    global_first = distributed.all_gather_cat(first)
    if keep <= len(global_first):
        return global_first
    sizes = distributed.all_gather_object([len(part) for part in samples])
    plan: list[tuple[int, int, int, int]] = []  # (step, rank, offset in its samples, count)
    taken, offsets = 0, [0] * len(sizes)
    for step in range(max(map(len, sizes))):
        for part, counts in enumerate(sizes):
            if step < len(counts) and counts[step] and taken < keep:
                count = min(counts[step], keep - taken)
                plan.append((step, part, offsets[part], count))
                taken += count
            if step < len(counts):
                offsets[part] += counts[step]
    if max(step for step, *_ in plan) == 0:  # one global batch: as alone, the first batch
        return global_first
    needed = [0] * len(sizes)
    for _, part, offset, count in plan:
        needed[part] = max(needed[part], offset + count)
    mine = torch.cat(samples)[: needed[distributed.rank()]]
    gathered = distributed.all_gather_cat(mine)
    starts = [sum(needed[:part]) for part in range(len(needed))]
    return torch.cat([gathered[starts[p] + o : starts[p] + o + n] for _, p, o, n in plan])


def measure_group_norms(
    ann: fx.GraphModule,
    calibration: Iterable[Any],
    *,
    batches: int = GROUP_NORM_BATCHES,
    progress: bool = True,
) -> None:
    """Measure every FrozenGroupNorm's statistics on calibration batches (with the sites as
    they are, i.e. the original ReLUs before thresholds are set), then freeze them."""
    norms = frozen_group_norms(ann)
    reference = reference_of(ann)
    total = _length(calibration)
    total = batches if total is None else min(batches, total)
    seen = tqdm(_batches(calibration, batches), total=total, desc="group norms", unit="batch",
                disable=not progress, leave=False)  # fmt: skip
    with torch.no_grad():
        for index, batch in enumerate(seen):
            ann(_input_of(batch, index, reference))
    for norm in norms.values():  # under a process group: the statistics of every rank
        norm.freeze()


def _batches(calibration: Iterable[Any], iterations: int | None) -> Iterator[Any]:
    if iterations is None:
        yield from read_calibration(calibration)
        return
    one_shot = iter(calibration) is calibration
    produced = 0
    while produced < iterations:
        got_any = False
        for batch in read_calibration(calibration):
            got_any = True
            yield batch
            produced += 1
            if produced == iterations:
                return
        if not got_any:
            return
        if one_shot:
            warnings.warn(
                f"calibration is a one-shot iterator: stopped after {produced} of "
                f"{iterations} iterations (pass a list or DataLoader to cycle)",
                stacklevel=3,
            )
            return


def _input_of(
    batch: Any, index: int, reference: tuple[torch.dtype, torch.device] | None = None
) -> Tensor:
    """The input tensor of a calibration batch (the batch itself or its first element), checked
    and moved to the network's device (``reference``: its dtype and device)."""
    if torch.is_tensor(batch):
        x = batch
    elif isinstance(batch, list | tuple) and batch and torch.is_tensor(batch[0]):
        x = batch[0]
    else:
        raise TypeError(
            f"calibration batch {index} is a {type(batch).__name__}: expected a tensor or an "
            "(input, target) pair"
        )
    if x.numel() == 0:
        raise ValueError(f"calibration batch {index} is empty")
    x = check_input(x, reference, f"calibration batch {index}", move=True)
    if not torch.isfinite(x).all():
        raise ValueError(f"calibration batch {index} contains NaN or inf values")
    return x


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None
