"""The converted network: thresholds, the clipped ANN, and simulation over time.

One graph, two readings. The prepared fx graph with its :class:`ActivationSite` modules *is*
the calibrated clipped ANN (:meth:`SpikingNetwork.relux`). Simulation walks the same graph
with a few nodes swapped for temporal twins: each site becomes an :class:`IFNeuron`, each max
pool on a time-varying input a :class:`GatedMaxPool` (or a :class:`CumulativeMaxPool`, or in
the paper's form a per-step pool), each node kept analog a :class:`RateAnalog`.

How simulation is fast and flat in memory:

* time is folded into the batch: a chunk of ``steps`` time steps of an (N, ...) activation is
  one (steps * N, ...) tensor, so every stateless layer (conv, linear, add, pool, upsample)
  runs once per chunk as one batched call; only the temporal modules unfold time;
* nodes that do not depend on any neuron (the first conv, BN, the stem pool: direct coding
  makes them constant in time) are computed once, not once per step;
* memory depends on the chunk length, not on T; readouts keep prefix sums only at the steps
  the requested windows start and end;
* the chunk is sized for the small late layers, whose calls cost mostly their overhead; the
  front, the early layers with large activations, runs it in sub-chunks of fewer steps, so
  that its values stay in the caches and the allocator's reused blocks
  (:meth:`_Runner.plan_front`).
"""

from __future__ import annotations

import copy
import math
import operator
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_unflatten
from tqdm.auto import tqdm

from snnlite.checks import check_delay, check_input, check_runs, check_timesteps, reference_of
from snnlite.graph import ANALOG, activation_sites, is_site, site_name, site_nodes
from snnlite.neurons import (
    IFNeuron,
    QuantisedSite,
    bits_per_step,
    broadcast_threshold,
    check_catch_up,
    check_signed_spikes,
    check_spikes_per_step,
    events_per_position,
    synaptic_operations,
)
from snnlite.pooling import MAX_POOL_TYPES, CumulativeMaxPool, GatedMaxPool
from snnlite.synapses import Activity, fanout_maps, source_name

__all__ = ["RateAnalog", "SpikingNetwork", "readout_start"]

Delay = int | Literal["auto", "half"]
MaxPoolMode = Literal["gated", "cumulative", "current"]
MAX_POOL_MODES = ("gated", "cumulative", "current")
_TIME_POOLS = (GatedMaxPool, CumulativeMaxPool)  # max pools with a state over time
MIN_WINDOW = 4  # if T < t0 + 4, read out the last 4 steps
CHUNK_STEPS = 16  # time steps per layer call, at most (see _tiling)
CACHE_BYTES = 2**21  # one sample-step larger than this overflows the caches anyway
MIN_WORK = 8  # sample-steps per layer call, at least, for such large activations (no front)
# The front (see _Runner.plan_front): the layers up to where activations shrink to at most
# FRONT_BYTES per sample-step run in sub-chunks of at most FRONT_CALL_BYTES per value. glibc
# serves blocks of 32 MiB and more with fresh mmaps, so a larger value page-faults at every
# call; below it, freed blocks are reused. On MobileNetV2 at 224 px sub-chunks of 10 / 16 /
# 24 / 31 MB ran at 0.95 / 1.10 / 1.17 / 1.10x its dense bound (bench/bench_224.py).
FRONT_BYTES = CACHE_BYTES // 4
FRONT_CALL_BYTES = 24 * 2**20
# Layers whose output is a new tensor, so a neuron they feed alone may overwrite it.
_FRESH_OUTPUT = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)


def readout_start(timesteps: int, delay: int | float) -> int:
    """The number of leading steps skipped before reading out, for a run of ``timesteps``.

    The readout averages steps ``d < t <= T`` with ``d = floor(delay)``; if fewer than
    ``MIN_WINDOW`` steps would remain, the last ``MIN_WINDOW`` (or all, if T is shorter).
    """
    return max(0, min(int(math.floor(delay)), timesteps - MIN_WINDOW))


class RateAnalog(nn.Module):
    """A node kept analog in the SNN: applies its function to the running average of its inputs.

    Applying a nonlinearity to each theta-valued spike is meaningless; applied to the average
    input so far it tends to the ANN's value as spikes accumulate (exact in the limit).
    """

    def __init__(self, function: Any) -> None:
        super().__init__()
        self.function = function
        self.sums: list[Tensor | None] = []
        self.seen = 0

    def reset(self) -> None:
        self.sums, self.seen = [], 0

    def forward(self, steps: int, *args: Any, **kwargs: Any) -> Tensor:
        leaves, spec = tree_flatten((args, kwargs))
        if not self.sums:
            self.sums = [None] * len(leaves)
        averaged = []
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, Tensor) and leaf.dim() > 0:
                per_step = leaf.reshape(steps, -1, *leaf.shape[1:])
                sums = torch.cumsum(per_step, dim=0)
                if self.sums[i] is not None:
                    sums = sums + self.sums[i]
                self.sums[i] = sums[-1]
                counts = torch.arange(self.seen + 1, self.seen + steps + 1, device=leaf.device)
                mean = sums / counts.view(steps, *([1] * (sums.dim() - 1))).to(sums.dtype)
                averaged.append(mean.reshape(leaf.shape))
            else:
                averaged.append(leaf)
        self.seen += steps
        call_args, call_kwargs = tree_unflatten(averaged, spec)
        return self.function(*call_args, **call_kwargs)


class _MethodCall:
    """``x.name(*args)`` as a callable, for call_method nodes kept analog."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(obj, self.name)(*args, **kwargs)


class SpikingNetwork(nn.Module):
    """A converted network: calibrated thresholds, its clipped ANN, and its spiking simulation.

    Built by :func:`snnlite.convert`. ``forward(x)`` runs :meth:`simulate` for one T.
    """

    catch_up: int = 1  # networks saved before the option existed read 1

    def __init__(
        self,
        ann: fx.GraphModule,
        *,
        max_pool: MaxPoolMode = "gated",
        delay_estimate: float | None = None,
        delay_schedule: Mapping[int, int] | None = None,
        work_bytes: int = 8 * 2**20,
        progress: bool = True,
        spikes_per_step: int = 1,
        signed_spikes: bool = False,
        catch_up: int = 1,
    ) -> None:
        super().__init__()
        if max_pool not in MAX_POOL_MODES:
            raise ValueError(f"max_pool must be one of {MAX_POOL_MODES}, got {max_pool!r}")
        self.ann = ann
        # 1: the paper's binary spikes; B > 1: burst neurons, up to B spikes of theta / B
        # per step (snnlite.neurons.burst_integrate_and_fire): log2(B + 1) bits per step.
        self.spikes_per_step = check_spikes_per_step(spikes_per_step)
        # Signed spikes with memory (snnlite.neurons.signed_integrate_and_fire): a neuron
        # may take back a spike it sent; three values per step, log2(3) bits. With bursts
        # (spikes_per_step S) its spikes are theta / S, up to S of them per step.
        self.signed_spikes = check_signed_spikes(signed_spikes)
        # Signed neurons that may send up to B spikes in one step to catch up on their
        # input (snnlite.neurons.signed_integrate_and_fire): log2(2 B + 1) bits per step.
        self.catch_up = check_catch_up(catch_up, self.signed_spikes)
        self.max_pool = max_pool
        self.delay_estimate = delay_estimate
        self.delay_schedule = dict(delay_schedule) if delay_schedule else None
        self.work_bytes = work_bytes
        self.progress = progress
        # One calibration sample's shape (set by convert): named when an input does not fit.
        self.sample_shape: tuple[int, ...] | None = None

    # --- the ANN side ------------------------------------------------------------------

    @property
    def thresholds(self) -> Mapping[str, Tensor]:
        """Activation-site name -> threshold tensor (shape () or (C,)), in execution order."""
        return MappingProxyType(
            OrderedDict((name, site.threshold) for name, site in activation_sites(self.ann).items())
        )

    @property
    def bits_per_step(self) -> float:
        """What one neuron's output carries per step (:func:`snnlite.neurons.bits_per_step`):
        1 for the paper's binary spikes."""
        return bits_per_step(self.spikes_per_step, self.signed_spikes, self.catch_up)

    def relux(self) -> fx.GraphModule:
        """The calibrated clipped ANN (ReLU -> ``clip(z, 0, theta)``), a standalone copy."""
        return copy.deepcopy(self.ann)

    def quantised_ann(self, timesteps: int) -> fx.GraphModule:
        """The ANN whose every activation is its neuron's T-step rate under a constant
        current (:class:`snnlite.neurons.QuantisedSite`, corrections included), a standalone
        copy. A signed network without max pools, read out at T with no delay, computes it
        exactly while no step brings a neuron more than its threshold (more than B
        thresholds with ``catch_up`` B; always when B >= T); the rest of its gap to it is
        lag. As T grows it tends to :meth:`relux` unless a bias current is set (a
        charge's effect falls as 1/T).
        """
        steps = check_timesteps(timesteps)
        if len(steps) != 1:
            raise ValueError(f"quantised_ann takes one T, got {timesteps!r}")
        quantised = copy.deepcopy(self.ann)
        for node in site_nodes(quantised):
            parent, _, attribute = str(node.target).rpartition(".")
            site = quantised.get_submodule(str(node.target))
            twin = QuantisedSite(site, steps[0], self.spikes_per_step)
            setattr(quantised.get_submodule(parent) if parent else quantised, attribute, twin)
        return quantised

    def estimate_delay(self, probe: Tensor) -> float:
        """Estimate when the last layer starts to fire, from one clipped-ANN pass (book chapter 5).

        ``t0 = sum_l (theta_l - u_l(0)) / max_i E_x[ReLU(z_l,i)]`` with ``u(0) = theta / 2``.
        With channel thresholds each channel c gives ``(theta_c / 2) / max_{i in c} E[ReLU z_i]``
        and a layer contributes the smallest of these: the time its first neuron can fire.
        Silent channels (theta = 0 or never driven) are skipped; a layer with no channel that
        can fire contributes nothing (it never fires, so it delays nothing downstream).
        """
        means: dict[str, Tensor] = {}

        def record(name: str):
            def hook(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
                z = inputs[0]
                means[name] = torch.relu(z).mean(dim=0)  # E_x[ReLU(z)] per neuron, (C, ...)

            return hook

        sites = activation_sites(self.ann)
        handles = [site.register_forward_pre_hook(record(n)) for n, site in sites.items()]
        try:
            with torch.no_grad():
                self.ann(probe)
        finally:
            for handle in handles:
                handle.remove()
        t0 = 0.0
        for name, site in sites.items():
            drive = means[name]
            theta = site.threshold.float()
            if theta.dim() == 0:
                peak, theta = drive.max().reshape(1), theta.reshape(1)
            else:
                peak = drive.reshape(drive.shape[0], -1).amax(dim=1)
            usable = (theta > 0) & (peak > 0)
            if usable.any():
                # time to the first spike: from u(0) = q / 2 to the level q = theta / B
                half_spike = theta[usable] / (2 * self.spikes_per_step)
                t0 += float((half_spike / peak[usable]).min())
        return t0

    # --- the SNN side ------------------------------------------------------------------

    def forward(self, x: Tensor, timesteps: int = 64, delay: Delay = "auto") -> Tensor:
        return self.simulate(x, [timesteps], delay=delay)[timesteps]

    @torch.no_grad()
    def simulate(
        self,
        x: Tensor,
        timesteps: int | Iterable[int],
        delay: Delay | float | Sequence[Delay | float] = "auto",
        *,
        chunk_size: int | None = None,
        batch_size: int | None = None,
        channels_last: bool = False,
        progress: bool | None = None,
        record_spikes: bool = False,
    ) -> dict[int, Any]:
        """Run ONE simulation to ``max(timesteps)`` and read out every requested T.

        ``delay`` may also be a list of delays: then the result is ``{(T, delay): readout}``,
        every window read from the same run (e.g. ``["auto", "half"]`` at the cost of one).

        Args:
            x: an input batch (N, ...), fed to the first layer at every step (direct coding),
                with the network's dtype and on its device (else a TypeError / ValueError
                that says so, before anything runs).
            timesteps: one T or several; each must be a positive integer (numpy integers
                too; floats such as ``8.0`` are refused).
            delay: steps skipped before the readout window: a number >= 0, ``"auto"`` (the
                delay chosen at conversion, :meth:`auto_delay`) or ``"half"`` (T/2). See
                :func:`readout_start` for the rule: a delay that leaves fewer than
                ``MIN_WINDOW`` steps (one longer than T too) reads out the last ``MIN_WINDOW``.
            chunk_size: time steps folded into one batched call of every layer.
            batch_size: samples simulated together (samples are independent, so a large
                batch is split into tiles simulated one after the other).
                By default both are chosen so that one layer call touches about
                ``work_bytes`` of activations: a working set that stays in the CPU's caches
                and allocator, and memory that does not grow with T; time steps first, up
                to ``CHUNK_STEPS``, then samples (see ``_tiling``).
            channels_last: run 4-D activations in channels-last memory format (a batch
                already in that format runs in it anyway). On a CPU this is often the faster
                layout for convolutions, depthwise ones most (``bench/speed_224.md``).
            progress: show a progress bar (defaults to the setting given at conversion).
            record_spikes: keep per-step spike counts of every neuron (``spike_counts``) and
                the events and synaptic operations of every spike source, in
                ``last_activity`` (an :class:`snnlite.synapses.Activity`; the fan-out maps are
                computed for ``x``'s shape first, one ANN pass on one sample).

        Returns:
            ``{T: readout}``: the mean of the network's analog output over the window
            ``d_T < t <= T``, with the same structure as the model's output.
        """
        tiles = self.simulate_tiles(
            x, timesteps, delay, chunk_size=chunk_size, batch_size=batch_size,
            channels_last=channels_last, progress=progress, record_spikes=record_spikes,
        )  # fmt: skip
        parts = [readouts for _, readouts in tiles]
        return {key: _concatenate([part[key] for part in parts]) for key in parts[0]}

    @torch.no_grad()
    def simulate_tiles(
        self,
        x: Tensor,
        timesteps: int | Iterable[int],
        delay: Delay | float | Sequence[Delay | float] = "auto",
        *,
        chunk_size: int | None = None,
        batch_size: int | None = None,
        channels_last: bool = False,
        progress: bool | None = None,
        record_spikes: bool = False,
    ) -> Iterator[tuple[slice, dict[Any, Any]]]:
        """:meth:`simulate`, one batch tile at a time: yields ``(rows, readouts)``, the
        tile's rows of ``x`` and its readouts, keyed as :meth:`simulate`'s.

        For a caller that reduces the readouts as they come (an error, a metric): it never
        holds the readouts of the whole batch, nor pays for joining them, which for many
        windows of a dense output costs more than the reduction (a readout delay chosen
        among ~120 windows of DeepLabV3's label maps spent a quarter of its time joining
        tiles). Everything is checked before the first tile runs; ``spike_counts`` and
        ``last_activity`` are set once the last tile is consumed.
        """
        steps_wanted = _check_timesteps(timesteps)
        x = check_input(x, reference_of(self.ann))
        if x.dim() == 0 or x.shape[0] == 0:
            raise ValueError("x must be a non-empty batch (N, ...)")
        if not torch.isfinite(x).all():
            raise ValueError("the input x contains NaN or inf")
        for name, value in (("chunk_size", chunk_size), ("batch_size", batch_size)):
            if value is not None and (isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self._check_thresholds()
        several = isinstance(delay, list | tuple)
        delays = [check_delay(d) for d in delay] if several else [check_delay(delay)]
        if not delays:
            raise ValueError("delay is an empty list")
        check_runs(self.ann, x, self.sample_shape)
        windows = {  # (T, delay) -> (d, T): the readout is the mean over steps d < t <= T
            (T, d): (readout_start(T, self._delay_steps(T, d)), T)
            for T in steps_wanted
            for d in delays
        }
        return self._run_tiles(x, windows, several, delays[0], steps_wanted, chunk_size,
                               batch_size, channels_last, progress, record_spikes)  # fmt: skip

    @torch.no_grad()  # a generator: torch enters the context at every resumption
    def _run_tiles(
        self,
        x: Tensor,
        windows: dict[Any, tuple[int, int]],
        several: bool,
        delay: Any,
        steps_wanted: list[int],
        chunk_size: int | None,
        batch_size: int | None,
        channels_last: bool,
        progress: bool | None,
        record_spikes: bool,
    ) -> Iterator[tuple[slice, dict[Any, Any]]]:
        """The generator behind :meth:`simulate_tiles` (a function of its own, so that the
        checks above run when it is called, not when its first tile is asked for)."""
        total = max(steps_wanted)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)

        fanouts = fanout_maps(self.ann, x[:1]) if record_spikes else None
        runner = self._runner(record_spikes, fanouts)
        if chunk_size is None or batch_size is None:
            chunk_size, batch_size = self._plan(runner, x, total, chunk_size, batch_size)

        show = self.progress if progress is None else progress
        bar = tqdm(total=total * math.ceil(x.shape[0] / batch_size), desc="simulate",
                   unit="step", disable=not show, leave=False)  # fmt: skip
        counts: dict[str, Tensor] = {}
        activity: Activity | None = None
        for first in range(0, x.shape[0], batch_size):
            tile = x[first : first + batch_size]
            readouts = self._simulate_tile(runner, tile, windows, total, chunk_size, bar)
            if record_spikes:
                for name, per_step in runner.spike_counts().items():
                    counts[name] = counts.get(name, 0) + per_step
                run = runner.activity(tile.shape[0])
                activity = run if activity is None else activity.merge(run)
            if not several:
                readouts = {T: readouts[(T, delay)] for T in steps_wanted}
            yield slice(first, first + tile.shape[0]), readouts
        bar.close()
        self.spike_counts = counts
        if record_spikes:
            self.last_activity = activity

    @torch.no_grad()
    def spike_trains(self, x: Tensor, timesteps: int) -> dict[str, Tensor]:
        """What every neuron emitted in one run of ``timesteps`` steps on ``x``.

        Returns ``{site name: spikes}``, each of shape (T, N, ...): theta-valued, or 1-valued
        for a folded network (:func:`snnlite.fold_thresholds`). It keeps every spike in
        memory (T times the activations), so it is for small inputs, to look at.
        """
        wanted = check_timesteps(timesteps)
        if len(wanted) != 1:
            raise ValueError(f"spike_trains runs one T, got {wanted}")
        total = wanted[0]
        x = check_input(x, reference_of(self.ann))
        self._check_thresholds()
        check_runs(self.ann, x, self.sample_shape)
        runner = self._runner()
        parts: dict[str, list[Tensor]] = {}

        def keep(name: str) -> Callable[[Tensor, int, int], None]:
            def add(value: Tensor, steps: int, _offset: int) -> None:
                parts[name].append(value.reshape(steps, -1, *value.shape[1:]).clone())

            return add

        for node in runner.nodes:
            if is_site(node):
                parts[site_name(node)] = []
                runner.watch[node] = keep(site_name(node))
        static = runner.run_static(x)
        done = 0
        while done < total:
            steps = min(CHUNK_STEPS, total - done)
            runner.run_chunk(static, steps, x.shape[0])
            done += steps
        runner.reset()
        return {name: torch.cat(chunks) for name, chunks in parts.items()}

    def _simulate_tile(
        self,
        runner: _Runner,
        x: Tensor,
        windows: dict[Any, tuple[int, int]],
        total: int,
        chunk: int,
        bar: tqdm,
    ) -> dict[Any, Any]:
        """Simulate one batch tile; read out every window (d, T] from prefix sums."""
        batch = x.shape[0]
        static = runner.run_static(x)
        checkpoints = sorted({0, *(k for window in windows.values() for k in window)})
        prefix: dict[int, list[Tensor]] = {}
        running: list[Tensor] | None = None
        dtypes: list[torch.dtype] = []
        spec = None
        done = 0
        while done < total:
            steps = min(chunk, total - done)
            output = runner.run_chunk(static, steps, batch)
            leaves, spec = tree_flatten(output)
            per_step = [_per_step(leaf, steps, batch) for leaf in leaves]
            if running is None:
                dtypes = [p.dtype for p in per_step]
                running = [torch.zeros_like(p[0], dtype=torch.float64) for p in per_step]
                prefix[0] = [r.clone() for r in running]
            cumulative = [r + torch.cumsum(p.double(), dim=0) for r, p in zip(running, per_step)]
            for k in checkpoints:
                if done < k <= done + steps:
                    prefix[k] = [c[k - done - 1] for c in cumulative]
            running = [c[-1] for c in cumulative]
            done += steps
            bar.update(steps)
        results = {}
        for key, (d, T) in windows.items():
            means = [((end - begin) / (T - d)).to(dtype)
                     for end, begin, dtype in zip(prefix[T], prefix[d], dtypes)]  # fmt: skip
            results[key] = tree_unflatten(means, spec)
        return results

    @torch.no_grad()
    def site_rates(
        self, x: Tensor, timesteps: int, start: int = 0, sites: Iterable[str] | None = None
    ) -> dict[str, Tensor]:
        """Average output of activation sites' neurons over the steps ``start < t <= T``.

        Returns ``{site: (N, ...) tensor}``, the spiking counterpart of the clipped ANN's
        activation at that site. The simulation stops after the last site asked for, so the
        rates of early layers cost only the layers up to them.
        """
        T = _check_timesteps(timesteps)[0]
        x = check_input(x, reference_of(self.ann))
        if not 0 <= start < T:
            raise ValueError(f"start must be in [0, {T}), got {start!r}")
        self._check_thresholds()
        nodes = {site_name(node): node for node in site_nodes(self.ann)}
        wanted = list(nodes) if sites is None else list(sites)
        unknown = [name for name in wanted if name not in nodes]
        if unknown:
            raise KeyError(f"no activation site named {unknown[0]!r}; sites: {list(nodes)}")
        runner = self._runner()
        order = {node: i for i, node in enumerate(runner.nodes)}
        runner.stop_after = max((nodes[name] for name in wanted), key=order.__getitem__)
        chunk, tile_size = self._plan(runner, x, T, None, None)
        parts: dict[str, list[Tensor]] = {name: [] for name in wanted}
        for tile in torch.split(x, tile_size):
            window = _WindowSums(start, tile.shape[0])
            runner.watch = {nodes[name]: window.watcher(name) for name in wanted}
            static = runner.run_static(tile)
            while window.done < T:
                steps = min(chunk, T - window.done)
                runner.run_chunk(static, steps, tile.shape[0])
                window.done += steps
            for name in wanted:
                parts[name].append((window.sums[name] / (T - start)).to(x.dtype))
        runner.reset()
        return {name: torch.cat(values) for name, values in parts.items()}

    def auto_delay(self, timesteps: int) -> float:
        """The delay ``delay="auto"`` uses for a run of ``timesteps`` steps.

        With a ``delay_schedule`` (``{T: delay}``, chosen per T by the low-latency tuning,
        :func:`snnlite.latency.choose_delays`): the entry of the largest scheduled T not above
        ``timesteps`` (the smallest entry below the schedule), and beyond the largest
        scheduled T the same fraction of the run. Otherwise the one ``delay_estimate`` made
        at conversion (:meth:`estimate_delay`), for every T.
        """
        if self.delay_schedule:
            scheduled = sorted(self.delay_schedule)
            below = [T for T in scheduled if T <= timesteps]
            key = below[-1] if below else scheduled[0]
            delay = self.delay_schedule[key]
            return delay * timesteps / key if timesteps > scheduled[-1] else delay
        if self.delay_estimate is None:
            raise ValueError("delay='auto' needs a delay estimate: call estimate_delay()")
        return self.delay_estimate

    def skipped_steps(self, timesteps: int, delay: Delay | float = "auto") -> int:
        """Leading steps a run of ``timesteps`` skips before its readout window, for ``delay``
        (``"auto"``, ``"half"`` or a number): the ``d`` of the window ``d < t <= T``."""
        return readout_start(timesteps, self._delay_steps(timesteps, check_delay(delay)))

    def _delay_steps(self, T: int, delay: Delay | float) -> float:
        if delay == "auto":
            return self.auto_delay(T)
        if delay == "half":
            return T // 2
        return check_delay(delay)  # type: ignore[return-value]  # a number here

    def _plan(
        self, runner: _Runner, x: Tensor, total: int, chunk: int | None, batch: int | None
    ) -> tuple[int, int]:
        """Steps per chunk and samples per tile for simulating ``x`` (those the caller fixed
        are kept), and the runner's front: the tiling suits the layers behind the front, and
        a tile holds no more samples than one front sub-chunk of a step can take."""
        per_sample = runner.plan_front(self._activation_bytes(runner, x[:1]))
        work = _work(self.work_bytes, per_sample)  # samples x steps per layer call
        chunk, tile = _tiling(work, total, x.shape[0], chunk, batch)
        if runner.front_end:
            if batch is None:
                tile = min(tile, max(1, FRONT_CALL_BYTES // runner.front_bytes))
            runner.front_steps = _front_steps(runner.front_bytes, tile)
        return chunk, tile

    def _runner(
        self, record_spikes: bool = False, fanouts: Mapping[str, Tensor] | None = None
    ) -> _Runner:
        return _Runner(self.ann, self.max_pool, record_spikes, fanouts, self.spikes_per_step,
                       self.signed_spikes, self.catch_up)  # fmt: skip

    def _activation_bytes(self, runner: _Runner, sample: Tensor) -> dict[fx.Node, int]:
        """The runner's ``activation_bytes`` for this kind of input, measured once: they set
        only the tiling, and cost a pass of the network (5% of a MobileNetV2 run at 224 px
        and T = 16)."""
        key = (id(self.ann), self.max_pool, self.spikes_per_step, self.signed_spikes,
               self.catch_up, tuple(sample.shape[1:]),
               sample.dtype, sample.device, runner.stop_after)  # fmt: skip
        cache = self.__dict__.setdefault("_activation_sizes", {})
        if key not in cache:
            cache[key] = runner.activation_bytes(sample)
        return cache[key]

    def _check_thresholds(self) -> None:
        for name, theta in self.thresholds.items():
            if not torch.isfinite(theta).all():
                raise ValueError(f"threshold of site {name!r} is not finite: calibrate first")


class _WindowSums:
    """Sums over the steps ``start < t`` of watched values, for one batch tile."""

    def __init__(self, start: int, batch: int) -> None:
        self.start, self.batch = start, batch
        self.done = 0  # steps simulated before the current chunk
        self.sums: dict[str, Tensor] = {}

    def watcher(self, name: str) -> Callable[[Tensor, int, int], None]:
        def add(value: Tensor, steps: int, offset: int) -> None:
            """``offset``: the value's first step within the chunk (a front's sub-chunk)."""
            per_step = value.reshape(steps, self.batch, *value.shape[1:])
            first = max(0, self.start - self.done - offset)  # its first step in the window
            if first < steps:
                part = per_step[first:].sum(dim=0, dtype=torch.float64)
                self.sums[name] = self.sums[name] + part if name in self.sums else part

        return add


def _check_timesteps(timesteps: int | Iterable[int]) -> list[int]:
    return check_timesteps(timesteps)


def _work(work_bytes: int, per_sample: int) -> int:
    """Sample-steps per layer call: as many as fit in ``work_bytes`` of the largest
    activation (behind the front, if there is one), and at least ``MIN_WORK`` once one
    sample-step alone is larger than ``CACHE_BYTES`` (only where no front could be cut).
    There the working set overflows the caches whatever the tiling, and with one
    sample-step per call the time goes into the per-call overhead of many small layer calls:
    MobileNetV2 at 224 px without its front (4.6 MB per sample-step, ~150 layer calls per
    step) simulated about half as fast with one sample-step per call as with 8, and more
    than 8 was slower again (``bench/bench_224.py``)."""
    work = max(1, work_bytes // max(1, per_sample))
    return max(work, MIN_WORK) if per_sample > CACHE_BYTES else work


def _front_steps(front_bytes: int, batch: int) -> int:
    """Steps per sub-chunk of the front: as many as keep its values under
    ``FRONT_CALL_BYTES`` (at least one)."""
    return max(1, FRONT_CALL_BYTES // max(1, front_bytes * batch))


def _tiling(
    work: int, total: int, samples: int, chunk: int | None, batch: int | None
) -> tuple[int, int]:
    """Steps per chunk and samples per tile, so that one layer call holds about ``work``
    sample-steps; whatever the caller fixed is kept.

    Time first, up to ``CHUNK_STEPS``: the neuron and pool kernels keep their state (membrane,
    running sums) in the CPU's L1 cache across the steps of one call, so a chunk of many
    steps over a few samples runs 1.5-1.7x faster than one step over many samples (measured
    on the zoo VGG: 3400 against 2000 image-steps/s), while the convolutions see the same
    number of images per call either way.
    """
    if chunk is None:
        chunk = min(total, CHUNK_STEPS, work) if batch is None else work // batch
    chunk = int(max(1, min(total, chunk)))
    if batch is None:
        batch = int(max(1, min(samples, work // chunk)))
    return chunk, batch


def _concatenate(parts: list[Any]) -> Any:
    """Join the readouts of batch tiles along the batch dim, leaf by leaf."""
    if len(parts) == 1:
        return parts[0]
    flat = [tree_flatten(part) for part in parts]
    leaves = [torch.cat(group) for group in zip(*(leaves for leaves, _ in flat))]
    return tree_unflatten(leaves, flat[0][1])


def _per_step(leaf: Any, steps: int, batch: int) -> Tensor:
    """A time-folded output leaf (steps * N, ...) as (steps, N, ...)."""
    if not torch.is_tensor(leaf):
        raise TypeError(f"the network output must be tensors, got {type(leaf).__name__}")
    return leaf.reshape(steps, batch, *leaf.shape[1:])


class _SourceRecord:
    """What one spike source sent during a run: events per step (summed over the batch) and,
    given its fan-out map, the synaptic operations they cost (so energy needs no second run).
    """

    def __init__(self, fanout: Tensor | None, neuron: bool, quantum: Tensor | None = None) -> None:
        self.fanout = fanout  # synapses per output position, one sample's shape
        self.neuron = neuron  # an IF neuron (its spikes are the site's spike counts)
        # Burst spikes: the value of one spike, theta / S (scalar or (C,); 1 where silent);
        # an output position then sends round(|value| / quantum) events (signed neurons
        # that catch up: spikes of either sign, several in one step).
        self.quantum = quantum
        self.events: list[Tensor] = []  # one (steps,) tensor per chunk
        self.sops: list[Tensor] = []

    def reset(self) -> None:
        self.events, self.sops = [], []

    def add(self, output: Tensor, steps: int) -> None:
        """``output``: what the source returned for a chunk, time-folded (steps * N, ...)."""
        per_step = output.view(steps, -1, *output.shape[1:])
        if self.quantum is None:  # binary spikes: one event per nonzero output
            counts = events_per_position(per_step)  # (steps, P)
        else:  # bursts: n spikes of theta / S are n events (signed: of either sign)
            quantum = broadcast_threshold(self.quantum.to(output.dtype), per_step.dim() - 1)
            counts = torch.round(per_step.abs() / quantum).sum(1).flatten(1)
        self.events.append(counts.sum(1, dtype=torch.int64))
        if self.fanout is not None:
            self.sops.append(synaptic_operations(counts, self.fanout))


class _Runner:
    """Walks the prepared graph for simulation: static nodes once, the rest per chunk."""

    def __init__(
        self,
        ann: fx.GraphModule,
        max_pool: MaxPoolMode,
        record: bool,
        fanouts: Mapping[str, Tensor] | None = None,
        spikes_per_step: int = 1,
        signed_spikes: bool = False,
        catch_up: int = 1,
    ) -> None:
        self.ann = ann
        self.spikes_per_step = spikes_per_step
        self.signed_spikes = signed_spikes
        self.catch_up = catch_up
        self.nodes = list(ann.graph.nodes)
        self.temporal: dict[fx.Node, nn.Module] = {}
        # What the spike sources return is recorded here, not by the sources themselves:
        # every neuron's spikes per step (with ``record``), and the events and SOPs of every
        # source that has a fan-out map.
        self.records: dict[fx.Node, _SourceRecord] = {}
        fanouts = fanouts or {}
        for node in self.nodes:
            module = self._temporal_twin(node, max_pool)
            if module is None:
                continue
            self.temporal[node] = module
            fanout = fanouts.get(node.name)
            neuron = isinstance(module, IFNeuron)
            if record and (neuron or (isinstance(module, _TIME_POOLS) and fanout is not None)):
                self.records[node] = _SourceRecord(fanout, neuron, self._burst_quantum(node))
        for node in self.nodes:
            if node.name in fanouts and node not in self.records:
                raise NotImplementedError(
                    f"energy: the max pool '{node.name}' pools spike trains per step "
                    "(max_pool='current'); its passed spikes are counted only with 'gated' or "
                    "'cumulative'"
                )
        self.dynamic = self._time_varying()
        self.last_use = self._last_uses()
        # Looked up once, not at every node of every chunk: a chunk walks ~150 nodes on
        # MobileNetV2, and the lookups (module paths, last uses) cost as much as small layers.
        self.modules = {node: ann.get_submodule(node.target)
                        for node in self.nodes if node.op == "call_module"}  # fmt: skip
        self.freed = [[arg for arg in node.all_input_nodes if self.last_use[arg] == i]
                      for i, node in enumerate(self.nodes)]  # fmt: skip
        # Observers of time-varying nodes: called with each chunk's value (steps * N, ...),
        # the number of steps and the first one's offset within the chunk (nonzero in the
        # front's sub-chunks); a chunk stops after ``stop_after`` (then run_chunk gives None).
        self.watch: dict[fx.Node, Callable[[Tensor, int, int], None]] = {}
        self.stop_after: fx.Node | None = None
        # The front (plan_front): nodes[:front_end] run front_steps steps at a time; the
        # values in ``exits`` cross to the rest of the graph. front_end 0: no front.
        self.front_end = 0
        self.front_bytes = 0  # its largest activation, one sample-step
        self.front_steps = 0
        self.exits: list[fx.Node] = []

    def _temporal_twin(self, node: fx.Node, max_pool: MaxPoolMode) -> nn.Module | None:
        if node.meta.get(ANALOG) and node.op in ("call_module", "call_function", "call_method"):
            if node.op == "call_module":
                return RateAnalog(self.ann.get_submodule(node.target))
            if node.op == "call_function":
                return RateAnalog(node.target)
            return RateAnalog(_MethodCall(node.target))
        if node.op != "call_module":
            return None
        if is_site(node):
            site = self.ann.get_submodule(node.target)
            return IFNeuron(site.threshold, site.bias, site.charge, site.unit,
                            self.spikes_per_step, self.signed_spikes, self.catch_up)  # fmt: skip
        module = self.ann.get_submodule(node.target)
        if isinstance(module, MAX_POOL_TYPES) and max_pool == "gated":
            return GatedMaxPool(module)
        if isinstance(module, MAX_POOL_TYPES) and max_pool == "cumulative":
            return CumulativeMaxPool(module)
        return None

    def _burst_quantum(self, node: fx.Node) -> Tensor | None:
        """The value of one spike of a burst source (a neuron, or a max pool that passes a
        neuron's spikes), as one sample's (C, 1, ...) or scalar; None for binary spikes
        (and signed ones of theta, one per step)."""
        if self.spikes_per_step == 1 and self.catch_up == 1:
            return None
        module = self.temporal[node]
        if not isinstance(module, IFNeuron):  # a pool counts the spikes of its input neuron
            source = node.args[0] if node.args else None
            module = self.temporal.get(source) if isinstance(source, fx.Node) else None
            if not isinstance(module, IFNeuron):
                raise NotImplementedError(
                    f"energy of burst spikes: the max pool '{node.name}' does not pool one "
                    "neuron's spikes, so its events cannot be counted"
                )
        theta = module.threshold
        quantum = torch.where(theta > 0, theta / self.spikes_per_step, torch.ones_like(theta))
        return quantum

    def _time_varying(self) -> set[fx.Node]:
        """Nodes whose value changes from step to step: neurons and everything downstream."""
        dynamic: set[fx.Node] = set()
        for node in self.nodes:
            is_neuron = isinstance(self.temporal.get(node), IFNeuron)
            if is_neuron or any(arg in dynamic for arg in node.all_input_nodes):
                dynamic.add(node)
        return dynamic

    def _last_uses(self) -> dict[fx.Node, int]:
        last: dict[fx.Node, int] = {}
        for i, node in enumerate(self.nodes):
            for arg in node.all_input_nodes:
                last[arg] = i
        return last

    def _spent(self, source: fx.Node, i: int) -> bool:
        """Whether node ``i`` may overwrite the value of ``source``: it is the last node to
        read it, nothing watches it, and it is a layer's fresh output (not a view that shares
        memory with another node's value)."""
        if self.last_use.get(source) != i or source in self.watch:
            return False
        if source.op == "call_module":
            return isinstance(self.modules[source], _FRESH_OUTPUT)
        return source.op == "call_function" and source.target in (operator.add, torch.add)

    def reset(self) -> None:
        for module in self.temporal.values():
            module.reset()
        for record in self.records.values():
            record.reset()

    def spike_counts(self) -> dict[str, Tensor]:
        """Site name -> spikes per step over the whole run (summed over the batch), (T,)."""
        return {
            site_name(node): torch.cat(record.events)
            for node, record in self.records.items()
            if record.neuron and record.events
        }

    def activity(self, samples: int) -> Activity:
        """Events and synaptic operations per step of every spike source, this tile."""
        events, sops, neurons, fanout = {}, {}, {}, {}
        for node, record in self.records.items():
            if record.fanout is not None and record.events:
                name = source_name(node)
                events[name] = torch.cat(record.events)
                sops[name] = torch.cat(record.sops)
                neurons[name] = record.fanout.numel()
                fanout[name] = float(record.fanout.sum())
        return Activity(samples, events, sops, neurons, fanout)

    def _call(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        if node.op == "call_module":
            return self.modules[node](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            obj, *rest = args
            return getattr(obj, node.target)(*rest, **kwargs)
        raise RuntimeError(f"unexpected node {node.op} {node.name}")

    def run_static(self, x: Tensor) -> dict[fx.Node, Any]:
        """Values of the nodes that are constant in time, computed once on the (N, ...) input."""
        self.reset()
        env: dict[fx.Node, Any] = {}
        for node in self.nodes:
            if node in self.dynamic:
                continue
            if node.op == "placeholder":
                env[node] = x
            elif node.op == "get_attr":
                env[node] = _fetch_attr(self.ann, node.target)
            elif node.op == "output":
                continue
            else:
                args, kwargs = _load(node, env)
                env[node] = self._call(node, args, kwargs)  # temporal twins act as the ANN here
        return env

    @torch.no_grad()
    def activation_bytes(self, sample: Tensor) -> dict[fx.Node, int]:
        """Bytes of every time-varying value for one sample and one step: nodes whose value
        is a tensor with the sample in its first dim (not a shape, a tuple, a reduction)."""
        sizes: dict[fx.Node, int] = {}
        front, self.front_end = self.front_end, 0
        try:
            self.run_chunk(self.run_static(sample), 1, sample.shape[0], sizes=sizes)
        finally:
            self.front_end = front
            self.reset()
        return sizes

    def plan_front(self, sizes: Mapping[fx.Node, int]) -> int:
        """Choose the front and return the largest activation behind it (one sample-step),
        which sets the tiling of the rest.

        Early layers hold the largest activations (MobileNetV2 at 224 px: 4.6 MB per
        sample-step at 112 x 112, 0.1 MB from 28 x 28 on). One tiling cannot suit both ends:
        calls large enough to amortise the per-call cost of the ~150 small late layers make
        the early values tens of MB, which leave the caches and page-fault at every
        allocation. So the front, the nodes up to the first point after the last value above
        ``FRONT_BYTES`` where what crosses to the rest is small (at most ``CACHE_BYTES / 4``,
        the values later nodes read), runs in sub-chunks of fewer steps (``_front_steps``),
        and the rest of each chunk runs on their joined outputs. Time order is kept (the
        sub-chunks run one after the other), so the results are those of shorter chunks.
        No front if no value is that large, or no cut is small enough (a U-Net's skips), or
        only one with nothing behind it (that front would be all the network).
        """
        self.front_end, self.front_bytes, self.exits = 0, 0, []
        large = [i for i, node in enumerate(self.nodes) if sizes.get(node, 0) > FRONT_BYTES]
        sized = [i for i, node in enumerate(self.nodes) if node in sizes]
        if large:
            first = large[-1] + 1
            live = [node for node in self.nodes[:first]  # values read at or after ``first``
                    if node in self.dynamic and self.last_use.get(node, -1) >= first]  # fmt: skip
            for end in range(first, sized[-1] + 1):  # something sized stays behind the cut
                small = all(node in sizes for node in live) and (
                    sum(sizes[node] for node in live) <= CACHE_BYTES // 4
                )
                if small:
                    self.front_end, self.exits = end, live
                    self.front_bytes = max(sizes.get(node, 0) for node in self.nodes[:end])
                    break
                node = self.nodes[end]  # the cut moves past it: it is read later, or not
                live = [value for value in live if self.last_use.get(value) != end]
                if node in self.dynamic and self.last_use.get(node, -1) > end:
                    live.append(node)
        behind = [sizes.get(node, 0) for node in self.nodes[self.front_end :]]
        return max(behind, default=1) or 1

    def run_chunk(
        self,
        static: dict[fx.Node, Any],
        steps: int,
        batch: int,
        sizes: dict[fx.Node, int] | None = None,
    ) -> Any:
        """Values of the output for ``steps`` more time steps, time-folded (steps * N, ...);
        the front (if any) in sub-chunks of ``front_steps`` steps."""
        env: dict[fx.Node, Any] = {}
        first = 0
        if self.front_end and 0 < self.front_steps < steps:
            parts: dict[fx.Node, list[Tensor]] = {node: [] for node in self.exits}
            for offset in range(0, steps, self.front_steps):
                part = min(self.front_steps, steps - offset)
                values: dict[fx.Node, Any] = {}
                if self._run_nodes(0, self.front_end, values, static, part, offset) is _STOP:
                    continue
                for node in self.exits:
                    parts[node].append(values[node])
            if parts and not all(parts.values()):  # stopped in the front
                return None
            env = {node: torch.cat(values) for node, values in parts.items()}
            first = self.front_end
        sizing = None if sizes is None else (sizes, steps * batch)
        output = self._run_nodes(first, len(self.nodes), env, static, steps, 0, sizing)
        return None if output is _STOP else output

    def _run_nodes(
        self,
        first: int,
        end: int,
        env: dict[fx.Node, Any],
        static: dict[fx.Node, Any],
        steps: int,
        offset: int,
        sizing: tuple[dict[fx.Node, int], int] | None = None,
    ) -> Any:
        """Run ``nodes[first:end]`` for ``steps`` steps, the first ``offset`` steps into the
        chunk, on the values in ``env`` (filled in); the output's value if it is reached,
        ``_STOP`` after ``stop_after``, else None. ``sizing``: (sizes, rows) records the bytes
        of every tensor value with ``rows`` (steps * N) in its first dim."""
        for i in range(first, end):
            node = self.nodes[i]
            if node.op == "output":
                args, _ = _load(node, env, static, steps)
                return args[0]
            if node not in self.dynamic:
                continue
            module = self.temporal.get(node)
            if isinstance(module, IFNeuron):
                source = node.args[0]
                if source in self.dynamic:
                    value = module(env[source], steps, in_place=self._spent(source, i))
                else:  # constant current: integrate it without repeating it
                    value = module(static[source], steps, constant=True)
            else:
                args, kwargs = _load(node, env, static, steps)
                if isinstance(module, _TIME_POOLS):
                    value = module(args[0], steps)
                elif isinstance(module, RateAnalog):
                    value = module(steps, *args, **kwargs)
                else:
                    value = self._call(node, args, kwargs)
            env[node] = value
            if node in self.records:
                self.records[node].add(value, steps)
            if node in self.watch:
                self.watch[node](value, steps, offset)
            if node is self.stop_after:
                return _STOP
            if sizing and torch.is_tensor(value) and value.dim() and value.shape[0] == sizing[1]:
                sizing[0][node] = value.numel() * value.element_size()
            for arg in self.freed[i]:  # free what no later node needs
                env.pop(arg, None)
        return None


_STOP = object()  # what _Runner._run_nodes returns after the node it was told to stop at


def _fetch_attr(gm: fx.GraphModule, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _expand_static(value: Any, steps: int) -> Any:
    """A constant (N, ...) tensor repeated for a chunk: (steps * N, ...)."""
    if torch.is_tensor(value) and value.dim() > 0 and steps > 1:
        return value.unsqueeze(0).expand(steps, *value.shape).reshape(-1, *value.shape[1:])
    return value


def _load(
    node: fx.Node, env: dict, static: dict | None = None, steps: int | None = None
) -> tuple[tuple, dict]:
    def value(arg: fx.Node) -> Any:
        if arg in env:
            return env[arg]
        assert static is not None and steps is not None
        return _expand_static(static[arg], steps)

    args = fx.node.map_arg(node.args, value)
    kwargs = fx.node.map_arg(node.kwargs, value)
    return args, kwargs
